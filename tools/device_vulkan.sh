# Sourced by the device scripts (tools/device_bench.sh, tools/device_h200.sh)
# on a lent NVIDIA machine: the Vulkan loader from the carried .debs (the
# image has none; QFUSE_NO_DEBS=1 skips this, for a dry run on a machine
# that has one), the NVIDIA ICD where the loader does not find it, and
# WGPU_BACKEND=vulkan unless set.
if [ -z "${QFUSE_NO_DEBS:-}" ]; then
    for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
    ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ] && ! ls /usr/share/vulkan/icd.d/*nvidia* >/dev/null 2>&1 && ! ls /etc/vulkan/icd.d/*nvidia* >/dev/null 2>&1; then
    export VK_DRIVER_FILES=$icd
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
export WGPU_BACKEND=${WGPU_BACKEND:-vulkan}
