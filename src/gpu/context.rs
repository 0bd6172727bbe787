//! The GPU context: adapter choice, device, queue and the pipeline cache.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// The kernel families the library runs, one WGSL file each under
/// `shaders/`. The conv kernels are compiled with [`Kernel::PRELUDE`]
/// (`shaders/common.wgsl`: the uniform block, the bindings and the
/// requantization epilogue) prepended, so the epilogue text exists once.
/// Kernels of your own (the benchmark's baselines, say) go through
/// [`CustomKernel`] and [`GpuContext::custom_pipeline`] instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// One output word per invocation (`conv2d.wgsl`): any conv2d/linear.
    Conv2d,
    /// Tiled implicit GEMM (`tiled.wgsl`): one group. With its `SPLITS`
    /// override > 0 it is also pass 1 of split-K (i32 partial accumulators).
    Tiled,
    /// Split-K pass 2 (`splitk.wgsl`): sums the partial accumulators of pass 1
    /// and applies the requantization epilogue.
    SplitK,
    /// Depthwise (`depthwise.wgsl`): groups == in_channels.
    Depthwise,
    /// f32 NCHW -> quint8 (`quantize.wgsl`).
    Quantize,
    /// Table ops with relayout (`lut.wgsl`).
    Lut,
    /// Quantized add (`add.wgsl`).
    Add,
    /// Pooling and mean (`pool.wgsl`).
    Pool,
    /// ONNX Runtime's float rules with exact division (`ort.wgsl`): its
    /// quantize, global/average pooling and softmax.
    Ort,
    /// Binary ops through a 65,536-entry table, with broadcasting (`binary.wgsl`).
    Binary,
    /// Byte gather through an index table (`gather.wgsl`).
    Gather,
    /// ONNX Runtime's Resize and PyTorch's bilinear upsampling, exact f32 (`resize.wgsl`).
    Resize,
    /// Per-channel 256-entry tables (`chanlut.wgsl`).
    ChannelLut,
    /// PyTorch's quantized softmax (`qsoftmax.wgsl`).
    QSoftmax,
    /// Inductor's generated C++ on f32 tensors, then its quantize
    /// (`inductor.wgsl`): the squeeze-excitation gate product, hardswish.
    Inductor,
    /// Pooling of f32 tensors (`pool_f32.wgsl`): max (f32 out) and
    /// Inductor's average pool (quint8 out).
    PoolF32,
    /// Tiled implicit GEMM on cooperative matrices (tensor cores): the body
    /// `coop.wgsl` ([`Kernel::COOP_BODY`]) on the primitives of
    /// `coop_hw.wgsl`, 16x16x16 f16 x f16 -> f32 fragments on subgroups of
    /// 32 (NVIDIA). Needs a context whose
    /// [`GpuContext::cooperative_matrix_kernel`] is this kernel.
    Coop,
    /// The same kernel on 8x8x8 f16 x f16 -> f32 fragments and subgroups of
    /// 8 (Mesa's lavapipe from Mesa 26 on); the same file, another
    /// [`Kernel::coop_shape`].
    Coop8,
    /// The same body on the primitives of `coop_emu.wgsl` (plain WGSL,
    /// any adapter): the kernel's logic where no tensor cores are.
    CoopEmulated,
    /// GEMV-shaped int8 linear / 1x1 conv for few output pixels
    /// (`gemv.wgsl`): K split over the workgroup, reduced in workgroup memory.
    Gemv,
}

impl Kernel {
    /// Every kernel, one per file of `shaders/` besides the prelude.
    pub const ALL: &'static [Kernel] = &[
        Kernel::Conv2d,
        Kernel::Tiled,
        Kernel::SplitK,
        Kernel::Depthwise,
        Kernel::Quantize,
        Kernel::Lut,
        Kernel::Add,
        Kernel::Pool,
        Kernel::Ort,
        Kernel::Binary,
        Kernel::Gather,
        Kernel::Resize,
        Kernel::ChannelLut,
        Kernel::QSoftmax,
        Kernel::Inductor,
        Kernel::PoolF32,
        Kernel::Coop,
        Kernel::Coop8,
        Kernel::CoopEmulated,
        Kernel::Gemv,
    ];

    /// The file under `shaders/` that every kernel's source starts with.
    pub const PRELUDE: &'static str = "common.wgsl";
    const PRELUDE_SOURCE: &'static str = include_str!("../../shaders/common.wgsl");
    /// The file under `shaders/` with exact f32 arithmetic in integer code
    /// (`fdiv`, `ffma`, `fmul_exact`, `fadd_exact`), prepended to the
    /// kernels of [`Kernel::uses_float_prelude`].
    pub const FLOAT_PRELUDE: &'static str = "float.wgsl";
    const FLOAT_PRELUDE_SOURCE: &'static str = include_str!("../../shaders/float.wgsl");
    /// The file under `shaders/` with the body of [`Kernel::Coop`] and
    /// [`Kernel::CoopEmulated`] (each kernel's own file holds its matrix
    /// primitives).
    pub const COOP_BODY: &'static str = "coop.wgsl";
    const COOP_BODY_SOURCE: &'static str = include_str!("../../shaders/coop.wgsl");
    /// The WGSL extensions [`Kernel::Coop`]'s module enables (at its top).
    const COOP_ENABLES: &'static str = "enable f16;\nenable wgpu_cooperative_matrix;\n";

    /// The file name under `shaders/`.
    pub fn file(self) -> &'static str {
        match self {
            Kernel::Conv2d => "conv2d.wgsl",
            Kernel::Tiled => "tiled.wgsl",
            Kernel::SplitK => "splitk.wgsl",
            Kernel::Depthwise => "depthwise.wgsl",
            Kernel::Quantize => "quantize.wgsl",
            Kernel::Lut => "lut.wgsl",
            Kernel::Add => "add.wgsl",
            Kernel::Pool => "pool.wgsl",
            Kernel::Ort => "ort.wgsl",
            Kernel::Binary => "binary.wgsl",
            Kernel::Gather => "gather.wgsl",
            Kernel::Resize => "resize.wgsl",
            Kernel::ChannelLut => "chanlut.wgsl",
            Kernel::QSoftmax => "qsoftmax.wgsl",
            Kernel::Inductor => "inductor.wgsl",
            Kernel::PoolF32 => "pool_f32.wgsl",
            Kernel::Coop | Kernel::Coop8 => "coop_hw.wgsl",
            Kernel::CoopEmulated => "coop_emu.wgsl",
            Kernel::Gemv => "gemv.wgsl",
        }
    }

    /// The kernel file's own text, compiled into the crate.
    pub fn body(self) -> &'static str {
        match self {
            Kernel::Conv2d => include_str!("../../shaders/conv2d.wgsl"),
            Kernel::Tiled => include_str!("../../shaders/tiled.wgsl"),
            Kernel::SplitK => include_str!("../../shaders/splitk.wgsl"),
            Kernel::Depthwise => include_str!("../../shaders/depthwise.wgsl"),
            Kernel::Quantize => include_str!("../../shaders/quantize.wgsl"),
            Kernel::Lut => include_str!("../../shaders/lut.wgsl"),
            Kernel::Add => include_str!("../../shaders/add.wgsl"),
            Kernel::Pool => include_str!("../../shaders/pool.wgsl"),
            Kernel::Ort => include_str!("../../shaders/ort.wgsl"),
            Kernel::Binary => include_str!("../../shaders/binary.wgsl"),
            Kernel::Gather => include_str!("../../shaders/gather.wgsl"),
            Kernel::Resize => include_str!("../../shaders/resize.wgsl"),
            Kernel::ChannelLut => include_str!("../../shaders/chanlut.wgsl"),
            Kernel::QSoftmax => include_str!("../../shaders/qsoftmax.wgsl"),
            Kernel::Inductor => include_str!("../../shaders/inductor.wgsl"),
            Kernel::PoolF32 => include_str!("../../shaders/pool_f32.wgsl"),
            Kernel::Coop | Kernel::Coop8 => include_str!("../../shaders/coop_hw.wgsl"),
            Kernel::CoopEmulated => include_str!("../../shaders/coop_emu.wgsl"),
            Kernel::Gemv => include_str!("../../shaders/gemv.wgsl"),
        }
    }

    /// Whether the kernel is compiled with the conv prelude (`common.wgsl`:
    /// conv uniforms, bindings and the requantization epilogue) in front.
    pub fn uses_prelude(self) -> bool {
        matches!(
            self,
            Kernel::Conv2d
                | Kernel::Tiled
                | Kernel::SplitK
                | Kernel::Depthwise
                | Kernel::Coop
                | Kernel::Coop8
                | Kernel::CoopEmulated
                | Kernel::Gemv
        )
    }

    /// The fragment edge and the subgroup size the coop kernels are
    /// compiled for (`FR`, `SG` of `coop.wgsl`): (16, 32) for
    /// [`Kernel::Coop`] and its emulation [`Kernel::CoopEmulated`], (8, 8)
    /// for [`Kernel::Coop8`]; None for the other kernels.
    pub fn coop_shape(self) -> Option<(u32, u32)> {
        match self {
            Kernel::Coop | Kernel::CoopEmulated => Some((16, 32)),
            Kernel::Coop8 => Some((8, 8)),
            _ => None,
        }
    }

    /// Whether the kernel is compiled with [`Kernel::FLOAT_PRELUDE`] in front
    /// (the conv kernels too: oneDNN's swish post-op in `common.wgsl` calls
    /// its exact `ffma` / `fdiv`).
    pub fn uses_float_prelude(self) -> bool {
        matches!(
            self,
            Kernel::Ort | Kernel::Resize | Kernel::QSoftmax | Kernel::Inductor | Kernel::PoolF32
        ) || self.uses_prelude()
    }

    /// The complete WGSL module: the float prelude (if
    /// [`Kernel::uses_float_prelude`]), the conv prelude (if
    /// [`Kernel::uses_prelude`]), then the kernel file (for the coop
    /// kernels: their `enable` directives and fragment types first, and
    /// [`Kernel::COOP_BODY`] after the kernel file).
    pub fn source(self) -> String {
        let mut s = String::new();
        if let Some((fr, sg)) = self.coop_shape() {
            if self != Kernel::CoopEmulated {
                s.push_str(Self::COOP_ENABLES);
                s.push_str(&format!(
                    "// ---- fragments (host) ----\n\
                     alias CoopA = coop_mat{fr}x{fr}<f16, A>;\n\
                     alias CoopB = coop_mat{fr}x{fr}<f16, B>;\n\
                     alias CoopC = coop_mat{fr}x{fr}<f32, C>;\n"
                ));
            }
            s.push_str(&format!("const FR: u32 = {fr}u;\nconst SG: u32 = {sg}u;\n"));
        }
        if self.uses_float_prelude() {
            s.push_str(Self::FLOAT_PRELUDE_SOURCE);
            s.push('\n');
        }
        if self.uses_prelude() {
            if !s.is_empty() {
                s.push_str(&format!("// ---- {} ----\n", Self::PRELUDE));
            }
            s.push_str(Self::PRELUDE_SOURCE);
            s.push('\n');
        }
        if s.is_empty() {
            return self.body().to_string();
        }
        s.push_str(&format!("// ---- {} ----\n{}", self.file(), self.body()));
        if self.coop_shape().is_some() {
            s.push_str(&format!(
                "\n// ---- {} ----\n{}",
                Self::COOP_BODY,
                Self::COOP_BODY_SOURCE
            ));
        }
        s
    }

    /// Source text of a file under `shaders/` (the prelude or a kernel), or None.
    pub fn file_source(name: &str) -> Option<&'static str> {
        if name == Self::PRELUDE {
            return Some(Self::PRELUDE_SOURCE);
        }
        if name == Self::FLOAT_PRELUDE {
            return Some(Self::FLOAT_PRELUDE_SOURCE);
        }
        if name == Self::COOP_BODY {
            return Some(Self::COOP_BODY_SOURCE);
        }
        Self::ALL
            .iter()
            .find(|k| k.file() == name)
            .map(|k| k.body())
    }
}

/// A WGSL compute kernel that is not one of qfuse's own [`Kernel`]s (a
/// benchmark baseline, an experiment), for [`GpuContext::custom_pipeline`]
/// and [`GpuContext::dispatch_custom`]. `source` is the complete module (no
/// prelude is prepended) with an entry point `main`; `name` labels it on the
/// GPU and in errors and keys it in the context's pipeline cache, so one
/// name stands for one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CustomKernel<'a> {
    /// Label and pipeline-cache key; one name must always mean one source.
    pub name: &'static str,
    /// The complete WGSL module, with a `@compute fn main`.
    pub source: &'a str,
}

/// The pipeline cache's key for a shader module: a kernel of the library or
/// a custom kernel (by name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ModuleKey {
    Kernel(Kernel),
    Custom(&'static str),
}

impl ModuleKey {
    fn label(self) -> &'static str {
        match self {
            ModuleKey::Kernel(k) => k.file(),
            ModuleKey::Custom(name) => name,
        }
    }
}

/// One recorded compute dispatch: pipeline, bindings and workgroup counts.
pub struct Dispatch {
    /// The compiled kernel with its overridable constants set.
    pub pipeline: wgpu::ComputePipeline,
    /// Bind group 0: the uniform block at binding 0 and the kernel's
    /// storage buffers at their bindings.
    pub bind: wgpu::BindGroup,
    /// Workgroup counts `(x, y)` (z is 1); see [`crate::gpu::dispatch_size`].
    pub groups: (u32, u32),
    /// The kernel's file name (a custom kernel's `name`), for GPU debuggers,
    /// errors and profiling.
    pub label: &'static str,
}

impl Dispatch {
    /// Records the dispatch into a compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(self.groups.0, self.groups.1, 1);
    }
}

/// What the context found: the adapter, its backend, and what it offers.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    /// The adapter's name as the driver reports it (e.g. `llvmpipe (LLVM
    /// ...)`, `NVIDIA GeForce ...`).
    pub name: String,
    /// The wgpu backend, `Debug`-formatted (`Vulkan`, `Metal`, `Dx12`, `Gl`).
    pub backend: String,
    /// `wgpu::DeviceType`, `Debug`-formatted (`DiscreteGpu`, `Cpu`, ...).
    pub device_type: String,
    /// Driver name and version, as the driver reports them (may be empty).
    pub driver: String,
    /// WGSL's `packed_4x8_integer_dot_product` language feature (`dot4I8Packed`).
    pub packed_dot: bool,
    /// The device was opened with timestamp queries (GPU timing in the
    /// benchmarks).
    pub timestamps: bool,
    /// The largest storage buffer one binding can hold, in bytes: it bounds
    /// the largest activation and weight tensor.
    pub max_storage_buffer_binding_size: u64,
    /// Why the tensor-core kernel ([`Kernel::Coop`] or [`Kernel::Coop8`])
    /// is off, or `None` when the device was opened with cooperative
    /// matrices and the conv layers of one group run it (see
    /// [`GpuContext::cooperative_matrix`]).
    pub cooperative_matrix_off: Option<String>,
    /// The fragment edge and subgroup size of the configuration the
    /// tensor-core kernel was compiled for ([`Kernel::coop_shape`]), where
    /// the adapter offers one (even if the known-answer check then turned
    /// the kernel off).
    pub cooperative_matrix_shape: Option<(u32, u32)>,
}

impl std::fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {}, driver {}); packed int8 dot product: {}; timestamps: {}",
            self.name,
            self.backend,
            self.device_type,
            if self.driver.is_empty() {
                "?"
            } else {
                &self.driver
            },
            if self.packed_dot { "yes" } else { "no" },
            if self.timestamps { "yes" } else { "no" },
        )?;
        match (&self.cooperative_matrix_off, self.cooperative_matrix_shape) {
            (None, Some((fr, sg))) => write!(
                f,
                "; tensor cores: yes ({fr}x{fr}x{fr} f16 -> f32, subgroups of {sg})"
            ),
            (None, None) => write!(f, "; tensor cores: yes"),
            (Some(why), _) => write!(f, "; tensor cores: no ({why})"),
        }
    }
}

/// The environment variable that relaxes the runtime checks wgpu compiles
/// into qfuse's own kernels (a speed experiment; the default keeps them):
/// `loops` drops the loop-bound counter wgpu adds to every loop (each loop
/// of qfuse's kernels is bounded by its uniforms), `none` also the bounds
/// checks of every array index (unsafe: only for kernels whose indices are
/// known to stay inside their buffers, as qfuse's tests hold them), `all`
/// (the default) keeps both.
pub const SHADER_CHECKS_ENV: &str = "QFUSE_SHADER_CHECKS";

/// The runtime checks compiled into qfuse's kernels (see [`SHADER_CHECKS_ENV`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShaderChecks {
    /// wgpu's default: loop bounds and index bounds checks.
    All,
    /// Index bounds checks only.
    NoLoopBounds,
    /// Neither.
    None,
}

impl ShaderChecks {
    fn from_env() -> Result<Self> {
        Self::parse(std::env::var(SHADER_CHECKS_ENV).ok().as_deref())
    }

    /// The value of [`SHADER_CHECKS_ENV`] (None: unset).
    fn parse(v: Option<&str>) -> Result<Self> {
        match v.map(str::trim) {
            None | Some("all") => Ok(ShaderChecks::All),
            Some("loops") => Ok(ShaderChecks::NoLoopBounds),
            Some("none") => Ok(ShaderChecks::None),
            Some(v) => Err(Error::config(
                SHADER_CHECKS_ENV,
                format!("{v:?}: expected all, loops or none"),
            )),
        }
    }
}

/// The environment variable that sets where the tensor-core kernel runs:
/// `0` turns it off (every adapter runs the packed-dot kernels); `1` makes
/// it the default kernel of conv layers of one group on every adapter that
/// offers it, CPU adapters included; unset, it is the default on GPUs only
/// (on Mesa's lavapipe, a CPU adapter, it is offered among the variants but
/// measured slower than packed dot, so [`super::ConvVariant::choose_on`]
/// keeps packed dot there).
pub const COOPERATIVE_MATRIX_ENV: &str = "QFUSE_COOPERATIVE_MATRIX";

/// [`COOPERATIVE_MATRIX_ENV`]: Some(false) for `0`, Some(true) for `1`,
/// None when unset.
fn coop_env() -> Result<Option<bool>> {
    parse_coop_env(std::env::var(COOPERATIVE_MATRIX_ENV).ok().as_deref())
}

fn parse_coop_env(v: Option<&str>) -> Result<Option<bool>> {
    match v.map(str::trim) {
        None => Ok(None),
        Some("0") => Ok(Some(false)),
        Some("1") => Ok(Some(true)),
        Some(v) => Err(Error::config(
            COOPERATIVE_MATRIX_ENV,
            format!("{v:?}: expected 0 or 1"),
        )),
    }
}

/// Which coop kernel `adapter` can run: `Ok((features to request, kernel))`
/// or why none. It needs wgpu's experimental cooperative matrices with
/// f16 in shaders, a fixed subgroup size and an f16 x f16 -> f32
/// configuration of the kernel's shape at that size: 16x16x16 on subgroups
/// of 32 ([`Kernel::Coop`]: NVIDIA) or 8x8x8 on subgroups of 8
/// ([`Kernel::Coop8`]: Mesa's lavapipe); 128 invocations and
/// [`super::COOP_WORKGROUP_BYTES`] of workgroup memory.
fn coop_support(adapter: &wgpu::Adapter) -> std::result::Result<(wgpu::Features, Kernel), String> {
    let want = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
    if !adapter
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    {
        return Err("no cooperative matrices (wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX)".into());
    }
    if !adapter.features().contains(wgpu::Features::SHADER_F16) {
        return Err("no f16 in shaders (wgpu's SHADER_F16)".into());
    }
    let configs = adapter.cooperative_matrix_properties();
    let offered = |fr: u32| {
        configs.iter().any(|c| {
            (c.m_size, c.n_size, c.k_size) == (fr, fr, fr)
                && c.ab_type == wgpu::CooperativeScalarType::F16
                && c.cr_type == wgpu::CooperativeScalarType::F32
        })
    };
    let info = adapter.get_info();
    let sizes = (info.subgroup_min_size, info.subgroup_max_size);
    let Some(kernel) = [Kernel::Coop, Kernel::Coop8].into_iter().find(|k| {
        let (fr, sg) = k.coop_shape().unwrap_or_default();
        offered(fr) && sizes == (sg, sg)
    }) else {
        let listed: Vec<String> = configs
            .iter()
            .map(|c| {
                format!(
                    "{}x{}x{} {:?} -> {:?}",
                    c.m_size, c.n_size, c.k_size, c.ab_type, c.cr_type
                )
            })
            .collect();
        return Err(format!(
            "no f16 x f16 -> f32 cooperative-matrix configuration the kernel runs on \
             (16x16x16 on subgroups of exactly 32, or 8x8x8 on subgroups of exactly 8); \
             the adapter lists [{}] with subgroups of {}..={}",
            listed.join(", "),
            sizes.0,
            sizes.1
        ));
    };
    let l = adapter.limits();
    if l.max_compute_invocations_per_workgroup < 128
        || l.max_compute_workgroup_size_x < 128
        || l.max_compute_workgroup_storage_size < super::conv::COOP_WORKGROUP_BYTES
    {
        return Err("workgroup limits below 128 invocations / 24 KiB".into());
    }
    Ok((want, kernel))
}

/// How to get an adapter when wgpu finds none on any backend.
pub const NO_ADAPTER_HELP: &str = "qfuse needs a GPU adapter (Vulkan, Metal, DX12 or GL). \
On a machine without a GPU, install Mesa's software Vulkan driver (Debian/Ubuntu: \
`sudo apt-get install mesa-vulkan-drivers`; in qfuse's repository, `bash tools/test.sh` \
installs it when no Vulkan driver is present).";

/// How to choose among the adapters there are.
pub const CHOOSE_ADAPTER_HELP: &str = "WGPU_BACKEND (vulkan, metal, dx12, gl; comma separated) \
and WGPU_ADAPTER_NAME (part of an adapter's name, any case) choose among them; \
`qfuse adapters` lists them.";

/// The values `WGPU_BACKEND` may list (comma separated), with wgpu's aliases.
const BACKEND_NAMES: &[(&[&str], wgpu::Backends)] = &[
    (&["vulkan", "vk"], wgpu::Backends::VULKAN),
    (&["metal", "mtl"], wgpu::Backends::METAL),
    (&["dx12", "d3d12"], wgpu::Backends::DX12),
    (&["gl", "gles", "opengl"], wgpu::Backends::GL),
    (&["webgpu"], wgpu::Backends::BROWSER_WEBGPU),
];

/// See [`GpuContext::backends_from_env`].
fn backends_from_env() -> Result<Option<wgpu::Backends>> {
    let Ok(value) = std::env::var("WGPU_BACKEND") else {
        return Ok(None);
    };
    let mut backends = wgpu::Backends::empty();
    for item in value.split(',') {
        let name = item.trim().to_lowercase();
        let Some((_, b)) = BACKEND_NAMES
            .iter()
            .find(|(n, _)| n.contains(&name.as_str()))
        else {
            let valid: Vec<String> = BACKEND_NAMES
                .iter()
                .map(|(n, _)| match n {
                    [one] => one.to_string(),
                    [first, rest @ ..] => format!("{first} ({})", rest.join(", ")),
                    [] => unreachable!(),
                })
                .collect();
            return Err(Error::config(
                "WGPU_BACKEND",
                format!(
                    "{item:?} (in WGPU_BACKEND={value:?}) is not a backend; valid values, comma separated: {}",
                    valid.join(", ")
                ),
            ));
        };
        backends |= *b;
    }
    Ok(Some(backends))
}

fn describe_adapter(info: &wgpu::AdapterInfo) -> String {
    format!("{} [{:?}, {:?}]", info.name, info.backend, info.device_type)
}

/// Owns the device, the queue and the compiled pipelines. Every GPU function
/// of qfuse takes a `&GpuContext`; none creates a device of its own.
pub struct GpuContext {
    /// The wgpu device (for custom buffers and pipelines next to qfuse's).
    pub device: wgpu::Device,
    /// The device's queue; qfuse submits its work here.
    pub queue: wgpu::Queue,
    adapter: wgpu::Adapter,
    report: AdapterReport,
    modules: Mutex<HashMap<ModuleKey, wgpu::ShaderModule>>,
    /// The source of each custom kernel compiled so far, by name.
    custom_sources: Mutex<HashMap<&'static str, String>>,
    pipelines: Mutex<HashMap<(ModuleKey, String), wgpu::ComputePipeline>>,
    /// The autotuner's cache (see [`super::tune`]).
    tuner: std::sync::Arc<super::tune::Tuner>,
    /// The runtime checks compiled into qfuse's kernels.
    shader_checks: ShaderChecks,
    /// The coop kernel the adapter's configurations suit (used where
    /// `report.cooperative_matrix_off` is None).
    coop: Kernel,
    /// Whether `coop` is the default kernel of layers of one group
    /// ([`COOPERATIVE_MATRIX_ENV`]).
    coop_default: bool,
}

/// An instance on the backends `WGPU_BACKEND` allows (all when unset).
fn instance() -> Result<wgpu::Instance> {
    backends_from_env()?;
    Ok(wgpu::Instance::new(
        wgpu::InstanceDescriptor::new_without_display_handle_from_env(),
    ))
}

/// Every adapter on every backend, described (for error messages).
async fn every_adapter() -> Vec<String> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::all();
    wgpu::Instance::new(desc)
        .enumerate_adapters(wgpu::Backends::all())
        .await
        .iter()
        .map(|a| describe_adapter(&a.get_info()))
        .collect()
}

/// The error for "no adapter fits": the adapters there are (each with its
/// backend) and how to choose one, or, when there is none at all, how to get one.
async fn no_adapter(what: String) -> Error {
    let all = every_adapter().await;
    if all.is_empty() {
        Error::NoAdapter(format!(
            "{what}, and wgpu finds none on any backend. {NO_ADAPTER_HELP}"
        ))
    } else {
        Error::NoAdapter(format!(
            "{what}. The adapters wgpu finds: {}. {CHOOSE_ADAPTER_HELP}",
            all.join("; ")
        ))
    }
}

impl GpuContext {
    /// Picks an adapter (honouring `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
    /// `WGPU_POWER_PREF`) and opens a device on it. Blocks.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// The async form of [`GpuContext::new`].
    pub async fn new_async() -> Result<Self> {
        let instance = instance()?;
        let adapter = Self::choose_adapter(&instance).await?;
        Self::from_adapter(&instance, adapter).await
    }

    /// The backends `WGPU_BACKEND` allows: `None` when it is not set; an
    /// error naming the value and the valid ones when it lists anything else
    /// (wgpu itself would skip unknown names and, with none left, find no adapter).
    pub fn backends_from_env() -> Result<Option<wgpu::Backends>> {
        backends_from_env()
    }

    /// One adapter as error messages and `qfuse adapters` show it: name,
    /// backend and device type (`llvmpipe (LLVM 15.0.6, 256 bits) [Vulkan, Cpu]`).
    pub fn describe_adapter(info: &wgpu::AdapterInfo) -> String {
        describe_adapter(info)
    }

    /// Every adapter wgpu sees (on the backends `WGPU_BACKEND` allows; an
    /// error if it names something else).
    pub fn list_adapters() -> Result<Vec<wgpu::AdapterInfo>> {
        let instance = instance()?;
        Ok(
            pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
                .iter()
                .map(|a| a.get_info())
                .collect(),
        )
    }

    async fn choose_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
        let on = match std::env::var("WGPU_BACKEND") {
            Ok(b) => format!(" on WGPU_BACKEND={b:?}"),
            Err(_) => String::new(),
        };
        if let Ok(want) = std::env::var("WGPU_ADAPTER_NAME") {
            let want_l = want.to_lowercase();
            let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
            return match adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&want_l))
            {
                Some(a) => Ok(a),
                None => Err(no_adapter(format!(
                    "WGPU_ADAPTER_NAME={want:?} matches no adapter{on}"
                ))
                .await),
            };
        }
        let power_preference =
            wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance);
        match instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference,
                ..Default::default()
            })
            .await
        {
            Ok(a) => Ok(a),
            Err(e) => Err(no_adapter(format!("no adapter{on} ({e})")).await),
        }
    }

    /// Opens a device on a given adapter, asking for the adapter's own limits
    /// (so large tensors fit) and for timestamp queries where offered.
    pub async fn from_adapter(instance: &wgpu::Instance, adapter: wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let wanted =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        let coop_on = coop_env()?;
        let coop = if coop_on == Some(false) {
            Err(format!("{COOPERATIVE_MATRIX_ENV}=0"))
        } else {
            coop_support(&adapter)
        };
        let features =
            (adapter.features() & wanted) | coop.as_ref().map(|c| c.0).unwrap_or_default();
        let experimental_features = if coop.is_ok() {
            // SAFETY: wgpu's experimental cooperative matrices, used by one
            // kernel (coop.wgsl) whose matrix operations run in uniform
            // control flow on workgroup memory it owns; the device tests
            // hold its results against the CPU reference bit for bit.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("qfuse"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                Error::NoAdapter(format!("could not open a device on {}: {e}", info.name))
            })?;
        let packed_dot = instance
            .wgsl_language_features()
            .contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct);
        let report = AdapterReport {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            packed_dot,
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            cooperative_matrix_shape: coop.as_ref().ok().and_then(|c| c.1.coop_shape()),
            cooperative_matrix_off: coop.as_ref().err().cloned(),
        };
        let autotune = match std::env::var(super::tune::AUTOTUNE_ENV)
            .as_deref()
            .map(str::trim)
        {
            Ok("1") => true,
            Ok("0") => false,
            Ok(v) => {
                return Err(Error::config(
                    super::tune::AUTOTUNE_ENV,
                    format!("{v:?}: expected 0 or 1"),
                ))
            }
            Err(_) => matches!(
                info.device_type,
                wgpu::DeviceType::DiscreteGpu
                    | wgpu::DeviceType::IntegratedGpu
                    | wgpu::DeviceType::VirtualGpu
            ),
        };
        let tuner = super::tune::Tuner::new(
            format!("{} | {} | {}", report.name, report.driver, report.backend),
            autotune,
        );
        if let Ok(path) = std::env::var(super::tune::TUNE_CACHE_ENV) {
            tuner.load(std::path::Path::new(&path))?;
        }
        let mut ctx = GpuContext {
            device,
            queue,
            adapter,
            report,
            modules: Mutex::default(),
            custom_sources: Mutex::default(),
            pipelines: Mutex::default(),
            tuner: std::sync::Arc::new(tuner),
            shader_checks: ShaderChecks::from_env()?,
            coop: coop.map_or(Kernel::Coop, |c| c.1),
            coop_default: coop_on.unwrap_or(info.device_type != wgpu::DeviceType::Cpu),
        };
        if ctx.cooperative_matrix() {
            // The tensor cores' arithmetic, once, before any layer uses it.
            if let Err(e) = super::conv::coop_self_check(&ctx, false) {
                ctx.report.cooperative_matrix_off = Some(e.to_string());
            }
        }
        Ok(ctx)
    }

    /// What adapter this context runs on and what it offers.
    pub fn report(&self) -> &AdapterReport {
        &self.report
    }

    /// The wgpu adapter.
    pub fn adapter(&self) -> &wgpu::Adapter {
        &self.adapter
    }

    /// The adapter's device type (`Cpu` for lavapipe/llvmpipe/WARP); the
    /// kernel heuristics use it ([`super::ConvVariant::choose`]).
    pub fn device_type(&self) -> wgpu::DeviceType {
        self.adapter.get_info().device_type
    }

    /// Whether the device runs the tensor-core kernel
    /// ([`GpuContext::cooperative_matrix_kernel`]): opened with cooperative
    /// matrices (16x16x16 or 8x8x8 f16 -> f32), so
    /// [`super::ConvVariant::choose_on`] gives conv layers of one group
    /// [`super::ConvVariant::Coop`]. [`AdapterReport::cooperative_matrix_off`]
    /// says why not.
    pub fn cooperative_matrix(&self) -> bool {
        self.report.cooperative_matrix_off.is_none()
    }

    /// The tensor-core kernel this device runs ([`Kernel::Coop`] or
    /// [`Kernel::Coop8`], by the adapter's configurations), or None where
    /// [`GpuContext::cooperative_matrix`] is false.
    pub fn cooperative_matrix_kernel(&self) -> Option<Kernel> {
        self.cooperative_matrix().then_some(self.coop)
    }

    /// Whether [`super::ConvVariant::choose_on`] gives layers of one group
    /// the tensor-core kernel: [`GpuContext::cooperative_matrix`], and the
    /// adapter a GPU or [`COOPERATIVE_MATRIX_ENV`] `1`.
    pub fn cooperative_matrix_by_default(&self) -> bool {
        self.cooperative_matrix() && self.coop_default
    }

    /// The runtime checks compiled into qfuse's kernels
    /// ([`SHADER_CHECKS_ENV`]; all of wgpu's by default).
    pub fn shader_checks(&self) -> ShaderChecks {
        self.shader_checks
    }

    /// Whether conv layers are autotuned ([`super::ConvVariant::Tuned`],
    /// chosen by [`super::ConvVariant::choose_on`] for layers created after
    /// this is set): by default on GPUs and off on CPU adapters;
    /// [`super::AUTOTUNE_ENV`] (`0`/`1`) or [`GpuContext::set_autotune`]
    /// decide otherwise.
    pub fn autotune(&self) -> bool {
        self.tuner
            .enabled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Turns autotuning on or off for layers created from now on.
    pub fn set_autotune(&self, on: bool) {
        self.tuner
            .enabled
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Loads the tuner's entries for this adapter from a JSON cache file
    /// (a missing file is an empty cache) and rewrites the file after each
    /// new measurement (other adapters' entries kept; written through a
    /// temporary file, never partially). [`super::TUNE_CACHE_ENV`] does
    /// the same at context creation. Errors: the file cannot be read or is
    /// not a tuner cache ([`Error::File`] naming it).
    pub fn set_tune_cache(&self, path: &std::path::Path) -> Result<()> {
        self.tuner.load(path)
    }

    /// The tuned variant of every shape bucket so far, in key order.
    pub fn tuned_variants(&self) -> Vec<(super::TuneKey, super::ConvVariant)> {
        let e = self.tuner.entries.lock().unwrap_or_else(|e| e.into_inner());
        e.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Every measurement this context made, in order: the bucket and each
    /// candidate's seconds per run (None: it could not run).
    pub fn tune_log(&self) -> Vec<(super::TuneKey, Vec<super::tune::Timing>)> {
        self.tuner
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn tuner(&self) -> std::sync::Arc<super::tune::Tuner> {
        self.tuner.clone()
    }

    /// The device's limits.
    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    /// Checks that a storage buffer of `bytes` can be bound on this device.
    pub fn check_storage_size(&self, what: &str, bytes: u64) -> Result<()> {
        let l = self.device.limits();
        let limit = l.max_storage_buffer_binding_size.min(l.max_buffer_size);
        if bytes > limit {
            return Err(Error::TooLarge {
                what: what.to_string(),
                needed: bytes,
                limit,
            });
        }
        Ok(())
    }

    /// The compute pipeline of `kernel` specialised by `constants` (its
    /// pipeline-overridable constants), compiled once and cached under
    /// (kernel, variant).
    pub fn pipeline(
        &self,
        kernel: Kernel,
        constants: &[(&str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        self.cached_pipeline(ModuleKey::Kernel(kernel), &|| kernel.source(), constants)
    }

    /// The compute pipeline of a WGSL kernel that is not one of qfuse's own
    /// (a benchmark or experimental kernel), specialised by `constants`.
    /// It goes through the same cache as the library's kernels, keyed by
    /// `kernel.name`: compiled on the first call, reused after. Binding
    /// numbers and the pipeline layout come from the WGSL (group 0; layout
    /// derived from what the entry point `main` uses); bind it yourself, or
    /// use [`GpuContext::dispatch_custom`].
    ///
    /// Errors: [`Error::Config`] if `kernel.name` was already compiled from a
    /// different source; [`Error::Gpu`] naming the kernel if the WGSL does not
    /// compile or has no entry point `main`.
    pub fn custom_pipeline(
        &self,
        kernel: CustomKernel<'_>,
        constants: &[(&str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let CustomKernel { name, source } = kernel;
        let registered = {
            let mut sources = self.custom_sources.lock().unwrap();
            match sources.get(name) {
                Some(known) if known != source => {
                    return Err(Error::config(
                        format!("custom kernel {name:?}"),
                        "this name was already compiled from a different WGSL source \
                         (one name, one source: give the other source its own name)",
                    ))
                }
                Some(_) => false,
                None => {
                    sources.insert(name, source.to_string());
                    true
                }
            }
        };
        let r = self.cached_pipeline(ModuleKey::Custom(name), &|| source.to_string(), constants);
        if r.is_err() && registered {
            // A source that did not compile does not claim the name.
            self.custom_sources.lock().unwrap().remove(name);
        }
        r
    }

    /// Looks up or compiles the pipeline of module `key` (source text from
    /// `source`) with `constants`. Nothing is cached when compilation fails.
    fn cached_pipeline(
        &self,
        key: ModuleKey,
        source: &dyn Fn() -> String,
        constants: &[(&str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let variant = constants
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let key = (key, variant);
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let label = key.0.label();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let cached = self.modules.lock().unwrap().get(&key.0).cloned();
        let module = cached.clone().unwrap_or_else(|| {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source().into()),
            };
            match (key.0, self.shader_checks) {
                // Custom kernels always keep wgpu's checks.
                (ModuleKey::Kernel(_), ShaderChecks::NoLoopBounds | ShaderChecks::None) => {
                    let checks = wgpu::ShaderRuntimeChecks {
                        bounds_checks: self.shader_checks == ShaderChecks::NoLoopBounds,
                        force_loop_bounding: false,
                        ..wgpu::ShaderRuntimeChecks::checked()
                    };
                    // SAFETY: opted into by SHADER_CHECKS_ENV. Every loop of
                    // qfuse's kernels is bounded by uniform sizes (no loop
                    // bound is needed for termination); without bounds
                    // checks, every index stays inside the buffers the host
                    // sized for the dispatch (the tests compare every
                    // kernel's output bit for bit, an out-of-bounds read
                    // would show there as it does with clamped reads).
                    unsafe { self.device.create_shader_module_trusted(desc, checks) }
                }
                _ => self.device.create_shader_module(desc),
            }
        });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("compiling {label} [{}]: {e}", key.1)));
        }
        if cached.is_none() {
            self.modules.lock().unwrap().insert(key.0, module);
        }
        self.pipelines.lock().unwrap().insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Builds one dispatch of `kernel`: binding 0 is a uniform block holding
    /// `uniform`, bindings 1.. are `buffers` in order; `invocations` threads in
    /// workgroups of `wg`.
    pub fn dispatch(
        &self,
        kernel: Kernel,
        constants: &[(&str, f64)],
        uniform: &[u8],
        buffers: &[&wgpu::Buffer],
        invocations: u32,
        wg: u32,
    ) -> Result<Dispatch> {
        let bound: Vec<(u32, &wgpu::Buffer)> = buffers
            .iter()
            .enumerate()
            .map(|(i, &b)| (i as u32 + 1, b))
            .collect();
        self.dispatch_bound(kernel, constants, uniform, &bound, invocations, wg)
    }

    /// [`GpuContext::dispatch`] with explicit binding numbers, for kernels
    /// that use only some of the prelude's bindings (the pipeline layout is
    /// derived from the bindings the kernel uses).
    pub fn dispatch_bound(
        &self,
        kernel: Kernel,
        constants: &[(&str, f64)],
        uniform: &[u8],
        buffers: &[(u32, &wgpu::Buffer)],
        invocations: u32,
        wg: u32,
    ) -> Result<Dispatch> {
        let pipeline = self.pipeline(kernel, constants)?;
        self.bind_dispatch(pipeline, kernel.file(), uniform, buffers, invocations, wg)
    }

    /// [`GpuContext::dispatch_bound`] for a kernel of your own (compiled and
    /// cached by [`GpuContext::custom_pipeline`]): binding 0 of group 0 is a
    /// uniform block holding `uniform`, `buffers` are (binding, buffer) pairs;
    /// `invocations` threads in workgroups of `wg` (the kernel's workgroup
    /// size), spread over a second grid dimension past the device's
    /// per-dimension limit as by [`super::dispatch_size`] (so the kernel
    /// must derive its index from both `workgroup_id.x` and `.y` when it can
    /// be that large). Record it with [`Dispatch::record`].
    pub fn dispatch_custom(
        &self,
        kernel: CustomKernel<'_>,
        constants: &[(&str, f64)],
        uniform: &[u8],
        buffers: &[(u32, &wgpu::Buffer)],
        invocations: u32,
        wg: u32,
    ) -> Result<Dispatch> {
        let pipeline = self.custom_pipeline(kernel, constants)?;
        self.bind_dispatch(pipeline, kernel.name, uniform, buffers, invocations, wg)
    }

    /// Binds a uniform block (binding 0) and `buffers` to `pipeline`'s group
    /// 0 and sizes the grid.
    fn bind_dispatch(
        &self,
        pipeline: wgpu::ComputePipeline,
        label: &'static str,
        uniform: &[u8],
        buffers: &[(u32, &wgpu::Buffer)],
        invocations: u32,
        wg: u32,
    ) -> Result<Dispatch> {
        use wgpu::util::DeviceExt;
        let ubuf = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: uniform,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: ubuf.as_entire_binding(),
        }];
        for &(binding, b) in buffers {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: b.as_entire_binding(),
            });
        }
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let groups = super::conv::dispatch_size(self, invocations.div_ceil(wg))?;
        Ok(Dispatch {
            pipeline,
            bind,
            groups,
            label,
        })
    }

    /// Number of pipelines compiled so far (for tests and reports).
    pub fn cached_pipelines(&self) -> usize {
        self.pipelines.lock().unwrap().len()
    }

    /// Submits an encoder and waits for the GPU, turning validation and
    /// out-of-memory errors into [`Error::Gpu`].
    pub fn submit_and_wait(&self, encoder: wgpu::CommandEncoder) -> Result<()> {
        self.queue.submit(Some(encoder.finish()));
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        Ok(())
    }

    /// Submits an encoder without waiting and returns its submission index,
    /// for [`GpuContext::wait_for`] or [`GpuContext::read_staging`]. Safe from
    /// any number of threads: the queue orders submissions, and each thread
    /// waits only for its own.
    pub fn submit(&self, encoder: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.queue.submit(Some(encoder.finish()))
    }

    /// Waits until one submission has finished on the GPU (not the whole
    /// queue: other threads' later submissions keep running), running every
    /// callback that is due. Several threads may wait at once.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        Ok(())
    }

    /// Reads back MAP_READ buffers whose copies were recorded in submission
    /// `index`: maps them all, waits for that submission only, and returns
    /// the first `bytes` of each (then unmaps them). No lock is held while
    /// waiting, so runs of several threads overlap on the GPU.
    pub fn read_staging(
        &self,
        index: wgpu::SubmissionIndex,
        buffers: &[(&wgpu::Buffer, u64)],
    ) -> Result<Vec<Vec<u8>>> {
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, (b, _)) in buffers.iter().enumerate() {
            let tx = tx.clone();
            b.map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = tx.send((i, r));
            });
        }
        drop(tx);
        self.wait_for(index)?;
        let mut failed = None;
        // A callback may run on another thread's poll: block until each has run.
        for _ in 0..buffers.len() {
            let (i, r) = rx
                .recv()
                .map_err(|_| Error::Gpu("readback callback never ran".into()))?;
            if let Err(e) = r {
                failed.get_or_insert(format!("mapping readback buffer {i}: {e}"));
            }
        }
        if let Some(e) = failed {
            for (b, _) in buffers {
                b.unmap();
            }
            return Err(Error::Gpu(e));
        }
        let mut out = Vec::with_capacity(buffers.len());
        for (b, bytes) in buffers {
            let view = b
                .get_mapped_range(..)
                .map_err(|e| Error::Gpu(format!("reading the readback buffer: {e:?}")))?;
            out.push(view[..*bytes as usize].to_vec());
            drop(view);
            b.unmap();
        }
        Ok(out)
    }

    /// Runs `f` inside validation and out-of-memory error scopes and returns
    /// the first error the device reported. wgpu's error scopes are
    /// per thread, so concurrent callers on other threads neither see nor
    /// steal each other's errors.
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let r = f();
        let e1 = pollster::block_on(val.pop());
        let e2 = pollster::block_on(oom.pop());
        let r = r?;
        if let Some(e) = e1.or(e2) {
            return Err(Error::Gpu(format!("{what}: {e}")));
        }
        Ok(r)
    }

    /// Copies a GPU buffer's first `bytes` back to the host.
    pub fn read_buffer(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("qfuse readback"),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
        self.submit_and_wait(enc)?;
        self.map_read(&staging, bytes)
    }

    /// Maps a MAP_READ buffer whose copy was already submitted and returns its
    /// first `bytes`.
    pub fn map_read(&self, staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        rx.recv()
            .map_err(|_| Error::Gpu("readback callback never ran".into()))?
            .map_err(|e| Error::Gpu(format!("mapping the readback buffer: {e}")))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(format!("reading the readback buffer: {e:?}")))?;
        let out = view[..bytes as usize].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_coop_env, ShaderChecks};

    #[test]
    fn cooperative_matrix_env_parse() {
        assert_eq!(parse_coop_env(None).unwrap(), None);
        assert_eq!(parse_coop_env(Some("0")).unwrap(), Some(false));
        assert_eq!(parse_coop_env(Some(" 1 ")).unwrap(), Some(true));
        let e = parse_coop_env(Some("yes")).unwrap_err().to_string();
        assert!(
            e.contains("QFUSE_COOPERATIVE_MATRIX") && e.contains("yes"),
            "{e}"
        );
    }

    #[test]
    fn shader_checks_parse() {
        assert_eq!(ShaderChecks::parse(None).unwrap(), ShaderChecks::All);
        assert_eq!(ShaderChecks::parse(Some("all")).unwrap(), ShaderChecks::All);
        assert_eq!(
            ShaderChecks::parse(Some(" loops")).unwrap(),
            ShaderChecks::NoLoopBounds
        );
        assert_eq!(
            ShaderChecks::parse(Some("none")).unwrap(),
            ShaderChecks::None
        );
        let e = ShaderChecks::parse(Some("off")).unwrap_err().to_string();
        assert!(
            e.contains("QFUSE_SHADER_CHECKS") && e.contains("off"),
            "{e}"
        );
    }
}
