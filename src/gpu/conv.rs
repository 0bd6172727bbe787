//! The fused int8 conv2d / linear on the GPU (`shaders/conv2d.wgsl`).

use wgpu::util::DeviceExt;

use super::{GpuContext, GpuTensor, Kernel};
use crate::error::{Error, Result};
use crate::layer::{LayerKind, QLayer};

/// The kernel's uniform block (`Params` in `shaders/common.wgsl`, 128 bytes).
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConvParams {
    pub n: u32,
    pub c4: u32,
    pub h: u32,
    pub w: u32,
    pub o: u32,
    pub o4: u32,
    pub oh: u32,
    pub ow: u32,
    pub kh: u32,
    pub kw: u32,
    pub stride_h: u32,
    pub stride_w: u32,
    pub pad_h: u32,
    pub pad_w: u32,
    pub dil_h: u32,
    pub dil_w: u32,
    pub cg: u32,
    pub og: u32,
    pub kq: u32,
    pub pad_word: u32,
    pub zp_out: i32,
    pub lo: i32,
    pub hi: i32,
    pub total: u32,
    /// The epilogue's form: 0 [`crate::quant::EpilogueForm::Scaled`], 1 `Onednn`,
    /// 2 `OnednnF32`, 3 `OnednnSum` (then `pad0` holds the addend scale `sa` as
    /// f32 bits and `pad1` the addend's zero point's stored byte; the output
    /// buffer holds the addend when the kernel starts), 4 `OnednnSumPool`,
    /// 5 `OnednnHardswish`, 6 `OnednnPool`, 7 `OnednnSwish`, 9 `OnednnSumFloat`
    /// (split-K pass 2 only, f32 words), 8 `OnednnFloat` (f32
    /// words out; `pad2` the post-op, [`crate::quant::OnednnPost::code`]).
    pub form: u32,
    /// Always 0: XORed into a float's bits, it keeps the compiler from
    /// contracting a product and the addition after it into an FMA.
    pub opaque: u32,
    /// oneDNN: the input scale.
    pub in_scale: f32,
    /// oneDNN: `1/output_scale`.
    pub inv_out: f32,
    /// oneDNN: the output type's offset (128 for qint8 images, else 0).
    pub offset: i32,
    pub pad0: u32,
    pub pad1: u32,
    pub pad2: u32,
}

/// Tile sizes of the tiled kernel (`shaders/tiled.wgsl`), passed as its
/// pipeline-overridable constants. `tn` counts output *words* (4 channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileConfig {
    /// Output pixels per workgroup tile.
    pub tm: u32,
    /// Output words (4 channels each) per workgroup tile.
    pub tn: u32,
    /// K words (input words of the reduction) per workgroup-memory slice.
    pub kt: u32,
    /// Register block rows: 4 or 8 output pixels per invocation (each x 4
    /// output words).
    pub rm: u32,
    /// Prefetch: the next slice is read into registers while the current
    /// one is computed (double-buffered staging through registers).
    pub prefetch: bool,
}

/// Sizes of the workgroup arrays and the register block in `tiled.wgsl`.
const XS_MAX: u32 = 2048;
const WS_MAX: u32 = 512;
/// The smaller register block of `tiled.wgsl`: pixels x output words per
/// invocation (a [`TileConfig`] may set 8 rows instead).
pub const TILE_RM: u32 = 4;
/// See [`TILE_RM`].
pub const TILE_RN: u32 = 4;
/// `tiled.wgsl`'s prefetch registers: weight vectors and activation words
/// per invocation.
const PF_W: u32 = 32;
const PF_X: u32 = 16;

impl TileConfig {
    /// A tile of `tm` pixels x `tn` output words over `kt` K words, with
    /// the 4-row register block and no prefetch.
    pub const fn new(tm: u32, tn: u32, kt: u32) -> TileConfig {
        TileConfig {
            tm,
            tn,
            kt,
            rm: TILE_RM,
            prefetch: false,
        }
    }
    /// 64 pixels x 64 channels, 64 invocations: large layers.
    pub const LARGE: TileConfig = TileConfig::new(64, 16, 16);
    /// 128 pixels x 64 channels, 128 invocations.
    pub const TALL: TileConfig = TileConfig::new(128, 16, 16);
    /// 64 pixels x 128 channels, 128 invocations.
    pub const WIDE: TileConfig = TileConfig::new(64, 32, 16);
    /// 4 pixels x 256 channels, 16 invocations: few output pixels (a
    /// linear layer's small batch).
    pub const SKINNY: TileConfig = TileConfig::new(4, 64, 8);
    /// 64 pixels x 128 channels with the 8-row register block (128
    /// accumulators per invocation), 64 invocations.
    pub const BIG: TileConfig = TileConfig {
        rm: 8,
        ..TileConfig::new(64, 32, 16)
    };
    /// [`TileConfig::BIG`] with prefetch.
    pub const BIG_PF: TileConfig = TileConfig {
        prefetch: true,
        ..TileConfig::BIG
    };
    /// 128 pixels x 128 channels, 8-row register block, prefetch, 128
    /// invocations.
    pub const HUGE_PF: TileConfig = TileConfig {
        rm: 8,
        prefetch: true,
        ..TileConfig::new(128, 32, 16)
    };
    /// [`TileConfig::WIDE`] with prefetch.
    pub const WIDE_PF: TileConfig = TileConfig {
        prefetch: true,
        ..TileConfig::WIDE
    };
    /// Every preset (tests run each; the autotuner times each). The
    /// per-shape heuristic ([`TileConfig::for_shape`]) picks among the
    /// first four.
    pub const PRESETS: &'static [TileConfig] = &[
        TileConfig::LARGE,
        TileConfig::TALL,
        TileConfig::WIDE,
        TileConfig::SKINNY,
        TileConfig::BIG,
        TileConfig::BIG_PF,
        TileConfig::HUGE_PF,
        TileConfig::WIDE_PF,
    ];

    /// Invocations per workgroup, `(tm/rm) * (tn/4)`.
    pub fn workgroup_size(&self) -> u32 {
        (self.tm / self.rm.max(1)) * (self.tn / TILE_RN)
    }

    /// Bytes of workgroup memory the kernel declares.
    pub const WORKGROUP_BYTES: u32 = XS_MAX * 4 + WS_MAX * 16;

    /// Checks the constraints of `tiled.wgsl` and the device's limits.
    pub fn check(&self, limits: &wgpu::Limits) -> Result<()> {
        let c = self;
        let wg = c.workgroup_size();
        let bad = |why: &str| Err(Error::config("tile config", format!("{c:?}: {why}")));
        if c.rm != 4 && c.rm != 8 {
            return bad("rm must be 4 or 8");
        }
        if c.tm == 0
            || c.tn == 0
            || c.kt == 0
            || !c.tm.is_multiple_of(c.rm)
            || !c.tn.is_multiple_of(TILE_RN)
        {
            return bad("tm must be a positive multiple of rm, tn of 4, kt >= 1");
        }
        if c.tm * c.kt > XS_MAX || c.tn * c.kt > WS_MAX {
            return bad(&format!(
                "slice too large (tm*kt <= {XS_MAX}, tn*kt <= {WS_MAX})"
            ));
        }
        if !wg.is_multiple_of(c.tm) || !c.kt.is_multiple_of(wg / c.tm) {
            return bad("the workgroup size must be a multiple of tm, and kt a multiple of workgroup size / tm");
        }
        if c.prefetch
            && (!(c.tn * c.kt).is_multiple_of(wg)
                || c.tn * c.kt / wg > PF_W
                || c.kt / (wg / c.tm) > PF_X)
        {
            return bad(&format!(
                "prefetch needs tn*kt a multiple of the workgroup size, tn*kt/wg <= {PF_W} and kt/(wg/tm) <= {PF_X}"
            ));
        }
        if wg > limits.max_compute_invocations_per_workgroup
            || wg > limits.max_compute_workgroup_size_x
        {
            return Err(Error::TooLarge {
                what: "tiled kernel workgroup".into(),
                needed: wg as u64,
                limit: limits
                    .max_compute_invocations_per_workgroup
                    .min(limits.max_compute_workgroup_size_x) as u64,
            });
        }
        if Self::WORKGROUP_BYTES > limits.max_compute_workgroup_storage_size {
            return Err(Error::TooLarge {
                what: "tiled kernel workgroup memory".into(),
                needed: Self::WORKGROUP_BYTES as u64,
                limit: limits.max_compute_workgroup_storage_size as u64,
            });
        }
        Ok(())
    }

    /// The tile heuristic for a GEMM of `m` output pixels, `o4` output words
    /// and `kq` reduction words:
    /// - `m < 32` (a linear layer's small batch, a tiny image): [`Self::SKINNY`],
    ///   so a workgroup does not compute 60 rows of padding;
    /// - `o4 >= 32` (128 or more output channels): [`Self::WIDE`] (64 x 128),
    ///   which halves the activation staging per output;
    /// - otherwise [`Self::LARGE`] (64 x 64).
    ///
    /// Measured on lavapipe with `qfuse-bench/examples/kernel_speed.rs` (512^3 GEMM,
    /// ResNet 3x3 convs); other adapters use the same choice for now.
    pub fn for_shape(m: usize, o4: usize, _kq: usize) -> TileConfig {
        if m < 32 {
            TileConfig::SKINNY
        } else if o4 >= 32 {
            TileConfig::WIDE
        } else {
            TileConfig::LARGE
        }
    }
}

/// The tensor-core kernel (`shaders/coop.wgsl`): pixels per workgroup tile.
pub const COOP_TM: u32 = 64;
/// ... output channels per tile (16 output words).
pub const COOP_TC: u32 = 64;
/// ... invocations per workgroup (4 subgroups of 32).
pub const COOP_WG: u32 = 128;
/// ... K values (bytes of the reduction) per workgroup-memory stage.
pub const COOP_KC: u32 = 32;
/// The K values whose products one f32 accumulator sums before it is
/// converted to i32 and cleared: 512 products of magnitude <= 2^14 keep
/// every partial sum <= 2^23, exact in f32 with a bit of margin (see
/// `coop.wgsl`). The kernel's `CHUNK_STAGES * KC`.
pub const COOP_CHUNK: u32 = 512;
/// [`ConvVariant::SplitK`] and [`ConvVariant::Coop`] with `splits: None`
/// run [`ConvVariant::Gemv`] (where it applies) for at most this many
/// output pixels.
pub const GEMV_MAX_ROWS: usize = 4;
/// Output words per workgroup of `gemv.wgsl` (its override `GW`)...
const GEMV_GW: u32 = 16;
/// ... and invocations per workgroup (16 K lanes).
const GEMV_WG: u32 = 256;
/// Output pixels per workgroup of `gemv.wgsl`.
const GEMV_MB: usize = 4;

/// [`ConvVariant::Coop`] with `splits: None` runs the packed-dot kernels
/// (tiled or split-K, as [`ConvVariant::SplitK`] would) for fewer output
/// pixels than this: a 64-row tile would be mostly padding.
pub const COOP_MIN_ROWS: usize = 32;
/// Bytes of workgroup memory `coop.wgsl` declares on tensor cores (f16
/// staging of A and B, the f32 chunk of C).
pub const COOP_WORKGROUP_BYTES: u32 = 2048 * 2 * 2 + 4096 * 4;

/// Split-K heuristic: split only when the tiled grid has fewer workgroups
/// than this (the GPU is then latency-bound, most of it idle)...
pub const SPLITK_MAX_TILES: usize = 256;
/// ... and the reduction has at least this many K words (kh*kw*ceil(C/4)).
pub const SPLITK_MIN_K: usize = 64;
/// Splits aim at tiles * splits >= this many workgroups (so 256 ..= 511).
pub const SPLITK_TARGET_GROUPS: usize = 256;
/// Every split keeps at least this many K words (reductions of 256 words or
/// more) ...
pub const SPLITK_MIN_K_PER_SPLIT: usize = 64;
/// ... or this many, for shorter reductions (the linear heads at small
/// batch: K = 128 words for 512 inputs, a handful of output tiles).
pub const SPLITK_MIN_K_PER_SPLIT_SHORT: usize = 16;
/// The most splits a layer may be pinned to.
pub const SPLITK_MAX_SPLITS: u32 = 4096;

/// The split-K heuristic: how many K splits a tiled GEMM of `tiles`
/// workgroups over `kq` K words (slices of `kt`) should use; 1 means no split
/// (one fused pass).
///
/// Split when `tiles < SPLITK_MAX_TILES` (256) and `kq >= SPLITK_MIN_K` (64
/// words); then `splits = ceil(256 / tiles)` (so tiles * splits lands in
/// 256 ..= 511), capped so every split keeps >= 64 K words (`kq / 64`; 16
/// words when `kq < 256`), and finally reduced to the number of non-empty
/// splits once the K range is cut at whole `kt` slices. Linear 512->1000 at
/// batch 1 (K = 128 words, 4 SKINNY tiles) gets 8. For example (H200 targets):
/// ResNet-18 layer4 3x3 512->512 at 7x7 (K = 1152 words, 4 WIDE tiles at
/// batch 1, 52 at batch 16) gets 18 and 5 splits; linear 1280->1000 at
/// batch 1 (K = 320 words, 4 SKINNY tiles) gets 5.
pub fn splitk_for_shape(tiles: usize, kq: usize, kt: u32) -> u32 {
    if tiles == 0 || tiles >= SPLITK_MAX_TILES || kq < SPLITK_MIN_K {
        return 1;
    }
    let splits = SPLITK_TARGET_GROUPS
        .div_ceil(tiles)
        .min(
            kq / if kq >= 256 {
                SPLITK_MIN_K_PER_SPLIT
            } else {
                SPLITK_MIN_K_PER_SPLIT_SHORT
            },
        )
        .max(1);
    let slices = kq.div_ceil(kt.max(1) as usize);
    let per_split = slices.div_ceil(splits);
    slices.div_ceil(per_split).min(SPLITK_MAX_SPLITS as usize) as u32
}

/// Which kernel (and, for the tiled one, which tiles) a layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvVariant {
    /// One output word per invocation over whole input words (`conv2d.wgsl`):
    /// one group, or channels per group a multiple of 4.
    Words,
    /// One output word per invocation, bytes gathered 4 at a time across
    /// (ky, kx, c) (`conv2d.wgsl`): any conv2d/linear.
    Gather,
    /// Tiled implicit GEMM (`tiled.wgsl`): one group. `None` picks the tiles
    /// per input shape ([`TileConfig::for_shape`]); `Some` pins them.
    Tiled(Option<TileConfig>),
    /// Split-K tiled implicit GEMM: one group. Pass 1 (`tiled.wgsl` with its
    /// `SPLITS` override) computes i32 partial accumulators of each output
    /// tile over `splits` slices of K into a scratch buffer the layer owns
    /// (grid: tiles x splits); pass 2 (`splitk.wgsl`) sums them per output in
    /// split order (the exact integer accumulator, equal to the unsplit sum)
    /// and applies the epilogue. For latency-bound layers: few output tiles,
    /// long K.
    ///
    /// `splits: Some(s)` always runs the two passes with `s` splits (trailing
    /// ones may be empty when K has fewer slices); `None` picks per input
    /// shape with [`splitk_for_shape`], which runs the one-pass tiled kernel
    /// when it picks 1. `tiles` as in [`ConvVariant::Tiled`].
    SplitK {
        /// The number of K splits, `1..=`[`SPLITK_MAX_SPLITS`], or `None`
        /// to choose per input shape.
        splits: Option<u32>,
        /// Pinned tiles, or `None` to choose per input shape.
        tiles: Option<TileConfig>,
    },
    /// Depthwise (`depthwise.wgsl`): groups == in_channels > 1, any channel
    /// multiplier.
    Depthwise,
    /// Tiled implicit GEMM on cooperative matrices (`coop.wgsl`, tensor
    /// cores): one group. 64 x 64 output tiles; the int8 products as
    /// f16 x f16 -> f32 matrix multiply-adds, each f32 accumulator converted
    /// to i32 every [`COOP_CHUNK`] K values (exact; see the WGSL).
    /// `emulated: false` needs [`GpuContext::cooperative_matrix`];
    /// `emulated: true` runs the same kernel body on plain-WGSL primitives
    /// on any adapter (slow: for tests of the kernel's logic).
    /// `splits` as in [`ConvVariant::SplitK`] (K cut at whole stages of
    /// [`COOP_KC`] values; pass 2 is `splitk.wgsl`); `None` chooses per
    /// input shape with [`splitk_for_shape`], and runs the packed-dot
    /// kernels (as [`ConvVariant::SplitK`]) below [`COOP_MIN_ROWS`] output
    /// pixels.
    Coop {
        /// Plain-WGSL primitives instead of tensor cores.
        emulated: bool,
        /// The number of K splits, or `None` to choose per input shape.
        splits: Option<u32>,
    },
    /// GEMV-shaped (`gemv.wgsl`): linear layers and 1x1 convs of one group
    /// with stride 1 and no padding. A workgroup computes 16 output words
    /// (64 channels) of 4 output pixels with the reduction split over 16
    /// K lanes and added in workgroup memory: for few output pixels (a
    /// linear head at small batch), where a GEMM tile is mostly padding.
    /// [`ConvVariant::SplitK`] and [`ConvVariant::Coop`] with `splits: None`
    /// pick it per input shape for at most [`GEMV_MAX_ROWS`] output pixels.
    Gemv,
    /// Autotuned (see [`super::tune`]): per input shape bucket, the variant
    /// measured fastest on this adapter among [`super::tune_candidates`],
    /// timed at the first dispatch of a new bucket and cached in the
    /// context (and its cache file). Layers of one group, neither pooled
    /// nor with an f32 sum output.
    Tuned,
}

impl ConvVariant {
    /// Whether this variant can run `layer`.
    pub fn applies(&self, layer: &QLayer) -> bool {
        let g = &layer.geometry;
        match self {
            ConvVariant::Gather => true,
            ConvVariant::Words => g.groups == 1 || g.cin_per_group().is_multiple_of(4),
            ConvVariant::Tiled(_) | ConvVariant::SplitK { .. } | ConvVariant::Coop { .. } => {
                g.groups == 1
            }
            ConvVariant::Depthwise => g.groups > 1 && g.cin_per_group() == 1,
            ConvVariant::Gemv => {
                g.groups == 1 && g.kernel == [1, 1] && g.stride == [1, 1] && g.padding == [0, 0]
            }
            ConvVariant::Tuned => {
                g.groups == 1
                    && !layer.global_pool()
                    && !matches!(
                        layer.epilogue.form,
                        crate::quant::EpilogueForm::OnednnSumFloat { .. }
                    )
            }
        }
    }

    /// [`ConvVariant::candidates`] plus, on a context with
    /// [`GpuContext::cooperative_matrix`], the tensor-core kernel chosen per
    /// shape and pinned to 3 splits, and [`ConvVariant::Tuned`] where
    /// [`GpuContext::autotune`]: every variant `ctx` can run.
    pub fn candidates_on(ctx: &GpuContext, layer: &QLayer) -> Vec<ConvVariant> {
        let mut v = Self::candidates(layer);
        if ctx.autotune() && ConvVariant::Tuned.applies(layer) {
            v.push(ConvVariant::Tuned);
        }
        if ctx.cooperative_matrix() {
            v.extend(
                [None, Some(3)]
                    .into_iter()
                    .map(|splits| ConvVariant::Coop {
                        emulated: false,
                        splits,
                    })
                    .filter(|x| x.applies(layer)),
            );
        }
        v
    }

    /// Every variant that applies to `layer` on any adapter: the tiled
    /// presets (the four of the heuristic, `BIG`, `HUGE_PF`) pinned,
    /// split-K chosen per shape and pinned to 1, 3 and 8 splits (for tests:
    /// K not a multiple of the splits, more splits than K slices), and
    /// GEMV. (The tensor-core kernel's emulation,
    /// `Coop { emulated: true, .. }`, runs anywhere too; it is slow on CPU
    /// adapters, so tests add it where they want it.)
    pub fn candidates(layer: &QLayer) -> Vec<ConvVariant> {
        let mut v = vec![
            ConvVariant::Words,
            ConvVariant::Gather,
            ConvVariant::Depthwise,
            ConvVariant::Tiled(None),
        ];
        // The first four presets, split-K, then the 8-row register block
        // without and with prefetch (tests that take the k-th candidate of
        // every layer for k below 12 keep their reach: every preset of
        // before and split-K). BIG_PF and WIDE_PF combine the same code
        // paths; `every_variant_on_tile_edge_shapes` runs them too.
        v.extend(
            TileConfig::PRESETS[..4]
                .iter()
                .map(|&c| ConvVariant::Tiled(Some(c))),
        );
        v.extend(
            [None, Some(1), Some(3), Some(8)]
                .into_iter()
                .map(|splits| ConvVariant::SplitK {
                    splits,
                    tiles: None,
                }),
        );
        v.extend([TileConfig::BIG, TileConfig::HUGE_PF].map(|c| ConvVariant::Tiled(Some(c))));
        v.push(ConvVariant::Gemv);
        v.retain(|x| x.applies(layer));
        v
    }

    /// The kernel `GpuLayer::new` gives `layer` on `ctx`: where
    /// [`GpuContext::autotune`], layers [`ConvVariant::Tuned`] applies to
    /// run it; else, on a context with
    /// [`GpuContext::cooperative_matrix_by_default`], layers of one group
    /// run the tensor-core kernel
    /// ([`ConvVariant::Coop`], splits per shape); otherwise
    /// [`ConvVariant::choose`] for the device's limits and type.
    pub fn choose_on(ctx: &GpuContext, layer: &QLayer) -> ConvVariant {
        let coop = ConvVariant::Coop {
            emulated: false,
            splits: None,
        };
        let limits = ctx.limits();
        if ctx.autotune()
            && ConvVariant::Tuned.applies(layer)
            && TileConfig::PRESETS.iter().all(|c| c.check(&limits).is_ok())
        {
            ConvVariant::Tuned
        } else if ctx.cooperative_matrix_by_default() && coop.applies(layer) {
            coop
        } else {
            Self::choose(layer, &ctx.limits(), ctx.device_type())
        }
    }

    /// The kernel heuristic `GpuLayer::new` uses:
    /// - depthwise layers (groups == in_channels > 1) run [`ConvVariant::Depthwise`];
    /// - one group runs the tiled kernel (tiles chosen per input shape at
    ///   encode time) when the device offers its workgroup size and memory
    ///   ([`TileConfig::check`] of every preset), else [`ConvVariant::Words`].
    ///   On a GPU (`device` DiscreteGpu, IntegratedGpu or VirtualGpu) that is
    ///   [`ConvVariant::SplitK`]` { splits: None, tiles: None }`: split-K
    ///   when the input shape leaves few output tiles and a long K
    ///   ([`splitk_for_shape`]), the one-pass tiled kernel otherwise. On
    ///   other adapters (`Cpu`: lavapipe, where every workgroup runs on a few
    ///   cores anyway, and `Other`) [`ConvVariant::Tiled`]`(None)`;
    /// - other grouped layers run `Words` when C/groups is a multiple of 4,
    ///   else `Gather`.
    pub fn choose(layer: &QLayer, limits: &wgpu::Limits, device: wgpu::DeviceType) -> ConvVariant {
        let g = &layer.geometry;
        let gpu = matches!(
            device,
            wgpu::DeviceType::DiscreteGpu
                | wgpu::DeviceType::IntegratedGpu
                | wgpu::DeviceType::VirtualGpu
        );
        if ConvVariant::Depthwise.applies(layer) {
            ConvVariant::Depthwise
        } else if g.groups == 1 && TileConfig::PRESETS.iter().all(|c| c.check(limits).is_ok()) {
            if gpu {
                ConvVariant::SplitK {
                    splits: None,
                    tiles: None,
                }
            } else {
                ConvVariant::Tiled(None)
            }
        } else if ConvVariant::Words.applies(layer) {
            ConvVariant::Words
        } else {
            ConvVariant::Gather
        }
    }

    /// [`ConvVariant::choose`] under WebGPU's default limits, for no
    /// particular device (never split-K).
    pub fn for_layer(layer: &QLayer) -> Self {
        Self::choose(layer, &wgpu::Limits::default(), wgpu::DeviceType::Other)
    }
}

const WG: u32 = 64;

/// A fused quantized conv2d/linear layer whose int8 weights and epilogue
/// constants live on the GPU (uploaded once, at creation).
pub struct GpuLayer {
    layer: QLayer,
    variant: ConvVariant,
    weights: wgpu::Buffer,
    chans: wgpu::Buffer,
    /// Weight words per output channel (Words, Gather), K words (Tiled,
    /// SplitK) or taps (Depthwise).
    kq: u32,
    /// Split-K partial accumulators, grown to the largest input shape
    /// dispatched so far (dispatches run in queue order, so one buffer
    /// serves them all).
    scratch: std::sync::Mutex<Option<wgpu::Buffer>>,
    /// [`ConvVariant::Tuned`]: the context's tuner, and the variant a shape
    /// runs before it is tuned (the tensor-core kernel or split-K, per
    /// shape).
    tuned: Option<(std::sync::Arc<super::tune::Tuner>, ConvVariant)>,
    /// The tensor-core kernel of the context (`Coop { emulated: false }`).
    coop: Kernel,
}

/// How a layer runs for one input shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// `conv2d.wgsl`, whole words or gathered bytes.
    Direct {
        gather: bool,
    },
    Depthwise,
    /// `tiled.wgsl`, one pass.
    Tiled(TileConfig),
    /// `tiled.wgsl` as split-K pass 1 then `splitk.wgsl`.
    SplitK(TileConfig, u32),
    /// `gemv.wgsl`.
    Gemv,
    /// `coop.wgsl` (`kernel`: on tensor cores, or emulated), one pass
    /// (splits 0) or as split-K pass 1 then `splitk.wgsl`.
    Coop {
        kernel: Kernel,
        splits: u32,
    },
}

impl Plan {
    /// The split-K pass 1 of a two-pass plan: its kernel, its tiles (None
    /// for coop) and its splits; None for one-pass plans.
    fn pass1(self) -> Option<(Kernel, Option<TileConfig>, u32)> {
        match self {
            Plan::SplitK(c, s) => Some((Kernel::Tiled, Some(c), s)),
            Plan::Coop { kernel, splits } if splits > 0 => Some((kernel, None, splits)),
            _ => None,
        }
    }
}

fn pack_word(f: impl Fn(usize) -> Option<u32>) -> u32 {
    (0..4)
        .map(|l| f(l).map_or(0, |b| b << (8 * l)))
        .fold(0, |a, b| a | b)
}

/// Packs a layer's int8 weights for a kernel variant (see the kernel's WGSL
/// file); returns the words and the `kq` of the uniform block.
pub(crate) fn pack_weights(layer: &QLayer, variant: ConvVariant) -> (Vec<u32>, u32) {
    let g = &layer.geometry;
    let (cg, [kh, kw]) = (g.cin_per_group(), g.kernel);
    let byte = |oc: usize, ci: usize, ky: usize, kx: usize| {
        layer.weight[((oc * cg + ci) * kh + ky) * kw + kx] as u8 as u32
    };
    let mut out = Vec::new();
    let kq = match variant {
        ConvVariant::Words => {
            let cg4 = cg.div_ceil(4);
            for oc in 0..g.out_channels {
                for ky in 0..kh {
                    for kx in 0..kw {
                        for j in 0..cg4 {
                            out.push(pack_word(|l| {
                                (4 * j + l < cg).then(|| byte(oc, 4 * j + l, ky, kx))
                            }));
                        }
                    }
                }
            }
            kh * kw * cg4
        }
        ConvVariant::Gather => {
            let k = kh * kw * cg;
            let kq = k.div_ceil(4);
            for oc in 0..g.out_channels {
                for q in 0..kq {
                    out.push(pack_word(|l| {
                        let r = 4 * q + l;
                        let (ci, t) = (r % cg, r / cg);
                        (r < k).then(|| byte(oc, ci, t / kw, t % kw))
                    }));
                }
            }
            kq
        }
        ConvVariant::Tiled(_)
        | ConvVariant::SplitK { .. }
        | ConvVariant::Coop { .. }
        | ConvVariant::Gemv
        | ConvVariant::Tuned => {
            // K-major: word (k * O4 + o4) * 4 + l is channel 4*o4+l at K word
            // k = (ky * kw + kx) * cg4 + j, so a vec4 holds 4 channels.
            let cg4 = cg.div_ceil(4);
            let o4 = g.out_channels.div_ceil(4);
            for ky in 0..kh {
                for kx in 0..kw {
                    for j in 0..cg4 {
                        for oc in 0..o4 * 4 {
                            out.push(if oc < g.out_channels {
                                pack_word(|l| (4 * j + l < cg).then(|| byte(oc, 4 * j + l, ky, kx)))
                            } else {
                                0
                            });
                        }
                    }
                }
            }
            kh * kw * cg4
        }
        ConvVariant::Depthwise => {
            // [O4][kh*kw], byte l the weight of channel 4*o4+l (cg == 1).
            let o4 = g.out_channels.div_ceil(4);
            for q in 0..o4 {
                for ky in 0..kh {
                    for kx in 0..kw {
                        out.push(pack_word(|l| {
                            (4 * q + l < g.out_channels).then(|| byte(4 * q + l, 0, ky, kx))
                        }));
                    }
                }
            }
            kh * kw
        }
    };
    (out, kq as u32)
}

impl GpuLayer {
    /// Uploads a layer's weights and epilogue constants, with the variant
    /// [`ConvVariant::choose`] picks for the layer and the device.
    pub fn new(ctx: &GpuContext, layer: &QLayer) -> Result<Self> {
        Self::with_variant(ctx, layer, ConvVariant::choose_on(ctx, layer))
    }

    /// Uploads a layer for a given kernel variant (`Gather` runs any layer).
    pub fn with_variant(ctx: &GpuContext, layer: &QLayer, variant: ConvVariant) -> Result<Self> {
        if !variant.applies(layer) {
            let g = &layer.geometry;
            return Err(Error::config(
                "conv2d variant",
                format!(
                    "{variant:?} cannot run a layer with {} input channels in {} groups",
                    g.in_channels, g.groups
                ),
            ));
        }
        match variant {
            ConvVariant::Tiled(Some(c)) | ConvVariant::SplitK { tiles: Some(c), .. } => {
                c.check(&ctx.limits())?
            }
            ConvVariant::Tuned => {
                for c in TileConfig::PRESETS {
                    c.check(&ctx.limits())?;
                }
            }
            _ => {}
        }
        if let ConvVariant::Coop { emulated, .. } = variant {
            if !emulated && !ctx.cooperative_matrix() {
                return Err(Error::Unsupported(format!(
                    "{variant:?}: the device has no tensor-core kernel ({})",
                    ctx.report()
                        .cooperative_matrix_off
                        .as_deref()
                        .unwrap_or("?")
                )));
            }
            let l = ctx.limits();
            // Emulated, the staging holds f32 instead of f16.
            let bytes = COOP_WORKGROUP_BYTES + if emulated { 2 * 2048 * 2 } else { 0 };
            if l.max_compute_invocations_per_workgroup < COOP_WG
                || l.max_compute_workgroup_size_x < COOP_WG
                || l.max_compute_workgroup_storage_size < bytes
            {
                return Err(Error::TooLarge {
                    what: format!(
                        "{variant:?} workgroup memory (bytes; and {COOP_WG} invocations, \
                         the device offers {})",
                        l.max_compute_invocations_per_workgroup
                    ),
                    needed: bytes as u64,
                    limit: l.max_compute_workgroup_storage_size as u64,
                });
            }
        }
        if let ConvVariant::SplitK {
            splits: Some(s), ..
        }
        | ConvVariant::Coop {
            splits: Some(s), ..
        } = variant
        {
            if s == 0 || s > SPLITK_MAX_SPLITS {
                return Err(Error::config(
                    "conv2d variant",
                    format!("{variant:?}: splits must be 1 ..= {SPLITK_MAX_SPLITS}"),
                ));
            }
        }
        let (words, kq) = pack_weights(layer, variant);
        ctx.check_storage_size("layer weights", words.len() as u64 * 4)?;
        let epi = layer
            .epilogue
            .shifted_for_signed_input(layer.input.zero_point, &layer.weight_sums());
        let weights = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("qfuse weights"),
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::STORAGE,
            });
        let chans = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("qfuse epilogue"),
                contents: bytemuck::cast_slice(&epi.channels),
                usage: wgpu::BufferUsages::STORAGE,
            });
        let tuned = (variant == ConvVariant::Tuned).then(|| {
            let fallback = if ctx.cooperative_matrix_by_default() {
                ConvVariant::Coop {
                    emulated: false,
                    splits: None,
                }
            } else {
                ConvVariant::SplitK {
                    splits: None,
                    tiles: None,
                }
            };
            (ctx.tuner(), fallback)
        });
        Ok(GpuLayer {
            coop: ctx.cooperative_matrix_kernel().unwrap_or(Kernel::Coop),
            layer: layer.clone(),
            variant,
            weights,
            chans,
            kq,
            scratch: Default::default(),
            tuned,
        })
    }

    /// The host layer this was uploaded from.
    pub fn layer(&self) -> &QLayer {
        &self.layer
    }
    /// The kernel variant it runs (as given, `None` fields still unresolved).
    pub fn variant(&self) -> ConvVariant {
        self.variant
    }

    /// Bytes of weights and per-channel constants held on the GPU.
    pub fn gpu_weight_bytes(&self) -> u64 {
        self.weights.size() + self.chans.size()
    }

    /// How the layer runs for an input shape (for [`ConvVariant::Tuned`]:
    /// the tuned variant's plan, or the fallback's before tuning).
    fn plan(&self, input_shape: &[usize]) -> Result<Plan> {
        self.plan_for(self.variant_for(input_shape)?, input_shape)
    }

    /// The tuner's key (shape bucket) for an input shape.
    pub fn tune_key(&self, input_shape: &[usize]) -> Result<super::tune::TuneKey> {
        let g = &self.layer.geometry;
        let rows = self.coop_rows(input_shape)?;
        Ok(super::tune::TuneKey {
            kernel: g.kernel.map(|k| k as u32),
            stride: g.stride.map(|k| k as u32),
            kq: self.kq,
            o4: g.out_channels.div_ceil(4) as u32,
            rows: u32::try_from(rows.next_power_of_two()).unwrap_or(u32::MAX),
        })
    }

    /// The variant an input shape runs: the variant itself, or for
    /// [`ConvVariant::Tuned`] the one tuned for its bucket (or the fallback
    /// before tuning).
    pub fn variant_for(&self, input_shape: &[usize]) -> Result<ConvVariant> {
        Ok(match &self.tuned {
            Some((tuner, fallback)) => tuner.get(&self.tune_key(input_shape)?).unwrap_or(*fallback),
            None => self.variant,
        })
    }

    /// [`ConvVariant::Tuned`]: times every candidate for the bucket of
    /// `input_shape` unless the context's tuner has it already, and records
    /// the fastest. Other variants: nothing.
    pub fn tune(&self, ctx: &GpuContext, input_shape: &[usize]) -> Result<()> {
        let Some((tuner, _)) = &self.tuned else {
            return Ok(());
        };
        let key = self.tune_key(input_shape)?;
        if tuner.get(&key).is_some() {
            return Ok(());
        }
        let out_shape = self.layer.output_shape(input_shape)?;
        let in_bytes = GpuTensor::gpu_bytes(input_shape)?;
        let out_bytes =
            GpuTensor::gpu_bytes(&out_shape)? * if self.layer.float_output() { 4 } else { 1 };
        ctx.check_storage_size("tuner input", in_bytes)?;
        ctx.check_storage_size("tuner output", out_bytes)?;
        // Deterministic non-zero bytes (the timing does not depend on them).
        let fill: Vec<u32> = (0..in_bytes.max(out_bytes) / 4)
            .map(|i| (i as u32).wrapping_mul(0x9E37_79B9) | 0x0101_0101)
            .collect();
        let buf = |bytes: u64| {
            ctx.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("qfuse tuner"),
                    contents: bytemuck::cast_slice(&fill[..(bytes / 4) as usize]),
                    usage: wgpu::BufferUsages::STORAGE,
                })
        };
        let (input, output) = (buf(in_bytes), buf(out_bytes));
        let mut timings = Vec::new();
        for v in super::tune::tune_candidates(ctx, &self.layer) {
            let t = self
                .plan_for(v, input_shape)
                .and_then(|plan| self.time_plan(ctx, plan, &input, input_shape, &output))
                .ok();
            timings.push((v, t));
        }
        let best = timings
            .iter()
            .filter_map(|&(v, t)| Some((v, t?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(v, _)| v)
            .ok_or_else(|| Error::Gpu(format!("tuning {key}: no candidate ran")))?;
        tuner.put(key, best, timings)
    }

    /// Seconds per run of `plan` (median of 5 timed runs after a warm-up):
    /// GPU timestamps around one compute pass where the device has them,
    /// the wall clock of a submit otherwise.
    fn time_plan(
        &self,
        ctx: &GpuContext,
        plan: Plan,
        input: &wgpu::Buffer,
        input_shape: &[usize],
        output: &wgpu::Buffer,
    ) -> Result<f64> {
        let ds = self.dispatch_with(ctx, plan, input, input_shape, output)?;
        let timer = ctx.report().timestamps.then(|| {
            let qs = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("qfuse tuner"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("qfuse tuner"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (qs, resolve)
        });
        let mut times = Vec::new();
        for run in 0..6 {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("qfuse tuner"),
                    timestamp_writes: timer.as_ref().map(|(qs, _)| {
                        wgpu::ComputePassTimestampWrites {
                            query_set: qs,
                            beginning_of_pass_write_index: Some(0),
                            end_of_pass_write_index: Some(1),
                        }
                    }),
                });
                for d in &ds {
                    d.record(&mut pass);
                }
            }
            if let Some((qs, resolve)) = &timer {
                enc.resolve_query_set(qs, 0..2, resolve, 0);
            }
            let t0 = std::time::Instant::now();
            ctx.submit_and_wait(enc)?;
            let wall = t0.elapsed().as_secs_f64();
            let t = match &timer {
                Some((_, resolve)) => {
                    let raw = ctx.read_buffer(resolve, 16)?;
                    let ts: &[u64] = bytemuck::cast_slice(&raw);
                    ts[1].wrapping_sub(ts[0]) as f64
                        * ctx.queue.get_timestamp_period() as f64
                        * 1e-9
                }
                None => wall,
            };
            if run > 0 {
                times.push(t);
            }
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    /// How the layer runs an input shape with `variant`.
    fn plan_for(&self, variant: ConvVariant, input_shape: &[usize]) -> Result<Plan> {
        let shape_tiles = |pinned: Option<TileConfig>| -> Result<(TileConfig, usize)> {
            let out = self.layer.output_shape(input_shape)?;
            let m = out[0] * out.get(2).unwrap_or(&1) * out.get(3).unwrap_or(&1);
            let o4 = self.layer.geometry.out_channels.div_ceil(4);
            let c = pinned.unwrap_or_else(|| TileConfig::for_shape(m, o4, self.kq as usize));
            Ok((c, m.div_ceil(c.tm as usize) * o4.div_ceil(c.tn as usize)))
        };
        Ok(match variant {
            ConvVariant::Tuned => {
                return Err(Error::config(
                    "conv2d variant",
                    "Tuned resolves to a measured variant, it has no plan of its own",
                ))
            }
            ConvVariant::Words => Plan::Direct { gather: false },
            ConvVariant::Gather => Plan::Direct { gather: true },
            ConvVariant::Depthwise => Plan::Depthwise,
            ConvVariant::Tiled(pinned) => Plan::Tiled(shape_tiles(pinned)?.0),
            ConvVariant::Gemv => Plan::Gemv,
            ConvVariant::SplitK {
                splits: None,
                tiles: None,
            }
            | ConvVariant::Coop { splits: None, .. }
                if ConvVariant::Gemv.applies(&self.layer)
                    && self.coop_rows(input_shape)? <= GEMV_MAX_ROWS =>
            {
                Plan::Gemv
            }
            ConvVariant::SplitK { splits, tiles } => {
                let (c, n_tiles) = shape_tiles(tiles)?;
                match splits {
                    Some(s) => Plan::SplitK(c, s),
                    None => match splitk_for_shape(n_tiles, self.kq as usize, c.kt) {
                        1 => Plan::Tiled(c),
                        s => Plan::SplitK(c, s),
                    },
                }
            }
            ConvVariant::Coop { splits: None, .. }
                if self.coop_rows(input_shape)? < COOP_MIN_ROWS =>
            {
                // Few output pixels (a linear head at small batch): most of
                // a 64-row tile would be padding; the packed-dot kernels.
                return self.plan_for(
                    ConvVariant::SplitK {
                        splits: None,
                        tiles: None,
                    },
                    input_shape,
                );
            }
            ConvVariant::Coop { emulated, splits } => {
                let splits = match splits {
                    Some(s) => s,
                    None => match splitk_for_shape(
                        self.coop_tiles(input_shape)? as usize,
                        self.kq as usize,
                        COOP_KC / 4,
                    ) {
                        1 => 0,
                        s => s,
                    },
                };
                let kernel = if emulated {
                    Kernel::CoopEmulated
                } else {
                    self.coop
                };
                Plan::Coop { kernel, splits }
            }
        })
    }

    /// The output pixels (GEMM rows) for an input shape.
    fn coop_rows(&self, input_shape: &[usize]) -> Result<usize> {
        let out = self.layer.output_shape(input_shape)?;
        Ok(out[0] * out.get(2).unwrap_or(&1) * out.get(3).unwrap_or(&1))
    }

    /// The tensor-core kernel's output tiles for an input shape.
    fn coop_tiles(&self, input_shape: &[usize]) -> Result<u64> {
        let m = self.coop_rows(input_shape)?;
        let o4 = self.layer.geometry.out_channels.div_ceil(4);
        Ok((m.div_ceil(COOP_TM as usize) * o4.div_ceil(COOP_TC as usize / 4)) as u64)
    }

    /// The tiles the tiled kernel uses for an input shape (None for the
    /// other kernels).
    pub fn tile_config(&self, input_shape: &[usize]) -> Result<Option<TileConfig>> {
        Ok(match self.plan(input_shape)? {
            Plan::Tiled(c) | Plan::SplitK(c, _) => Some(c),
            _ => None,
        })
    }

    /// The number of K splits for an input shape: `Some(s)` when the layer
    /// runs split-K (two dispatches), None when it runs one pass.
    pub fn splits(&self, input_shape: &[usize]) -> Result<Option<u32>> {
        Ok(self.plan(input_shape)?.pass1().map(|(_, _, s)| s))
    }

    /// The number of dispatches [`GpuLayer::dispatch`] returns for an input
    /// shape.
    pub fn dispatch_count(&self, input_shape: &[usize]) -> Result<usize> {
        Ok(if self.splits(input_shape)?.is_some() {
            2
        } else {
            1
        })
    }

    /// The uniform block for an input shape; also returns the output shape.
    /// `total` counts output words, or output tiles for the tiled kernel
    /// (split-K: [`GpuLayer::dispatch`] adjusts it per pass).
    pub(crate) fn params(&self, input_shape: &[usize]) -> Result<(ConvParams, Vec<usize>)> {
        self.params_with(self.plan(input_shape)?, input_shape)
    }

    /// [`GpuLayer::params`] for a given plan.
    fn params_with(&self, plan: Plan, input_shape: &[usize]) -> Result<(ConvParams, Vec<usize>)> {
        let out_shape = self.layer.output_shape(input_shape)?;
        let g = &self.layer.geometry;
        let (n, c, h, w) = crate::layout::nchw(input_shape)?;
        let (oh, ow) = if self.layer.kind == LayerKind::Linear {
            (1, 1)
        } else {
            (out_shape[2], out_shape[3])
        };
        let o4 = g.out_channels.div_ceil(4);
        let total = (n * oh * ow * o4) as u64;
        if total > u32::MAX as u64 / 2 {
            return Err(Error::TooLarge {
                what: "conv2d output words".into(),
                needed: total,
                limit: u32::MAX as u64 / 2,
            });
        }
        let total = match plan {
            Plan::Tiled(c) | Plan::SplitK(c, _) => {
                ((n * oh * ow).div_ceil(c.tm as usize) * o4.div_ceil(c.tn as usize)) as u64
            }
            Plan::Coop { .. } => self.coop_tiles(input_shape)?,
            Plan::Gemv => ((n * oh * ow).div_ceil(GEMV_MB) * o4.div_ceil(GEMV_GW as usize)) as u64,
            Plan::Direct { .. } | Plan::Depthwise => total,
        };
        let zp = self.layer.input.zero_point as u32;
        let e = &self.layer.epilogue;
        let (mut pad0, mut pad1, mut pad2) = (0u32, 0u32, 0u32);
        let (form, in_scale, inv_out, offset) = match e.form {
            crate::quant::EpilogueForm::Scaled => (0, 0.0, 0.0, 0),
            crate::quant::EpilogueForm::Onednn {
                input_scale,
                inv_output_scale,
                offset,
            } => (1, input_scale, inv_output_scale, offset),
            crate::quant::EpilogueForm::OnednnF32 {
                input_scale,
                inv_output_scale,
            } => (2, input_scale, inv_output_scale, 0),
            crate::quant::EpilogueForm::OnednnSum {
                input_scale,
                inv_output_scale,
                offset,
                sum_scale,
                sum_zero_point,
                sum_offset,
            } => {
                // The addend's scale, and the stored byte of its zero point.
                pad0 = sum_scale.to_bits();
                pad1 = (sum_zero_point + sum_offset) as u32;
                (3, input_scale, inv_output_scale, offset)
            }
            crate::quant::EpilogueForm::OnednnSumPool {
                input_scale,
                inv_output_scale,
                sum_scale,
                sum_zero_point,
                relu,
            } => {
                // pad2: oneDNN's relu before the average (splitk.wgsl, POOL).
                pad0 = sum_scale.to_bits();
                pad1 = sum_zero_point as u32;
                pad2 = relu as u32;
                (4, input_scale, inv_output_scale, 0)
            }
            crate::quant::EpilogueForm::OnednnHardswish {
                input_scale,
                inv_output_scale,
                offset,
            } => (5, input_scale, inv_output_scale, offset),
            crate::quant::EpilogueForm::OnednnPool {
                input_scale,
                inv_output_scale,
                relu,
            } => {
                // No addend (splitk.wgsl, POOL, form 6); pad2: the relu.
                pad2 = relu as u32;
                (6, input_scale, inv_output_scale, 0)
            }
            crate::quant::EpilogueForm::OnednnSwish {
                input_scale,
                inv_output_scale,
                offset,
            } => (7, input_scale, inv_output_scale, offset),
            crate::quant::EpilogueForm::OnednnSumFloat {
                input_scale,
                sum_scale,
                sum_zero_point,
                sum_offset,
                relu,
            } => {
                // splitk.wgsl, POOL 2: f32 words; pad0 sa, pad1 the addend's
                // zero point's stored byte, pad2 the relu.
                pad0 = sum_scale.to_bits();
                pad1 = (sum_zero_point + sum_offset) as u32;
                pad2 = relu as u32;
                (9, input_scale, 0.0, 0)
            }
            crate::quant::EpilogueForm::OnednnFloat { input_scale, post } => {
                // f32 words (common.wgsl's store_out); pad2: the post-op.
                pad2 = post.code();
                (8, input_scale, 0.0, 0)
            }
        };
        let p = ConvParams {
            n: n as u32,
            c4: c.div_ceil(4) as u32,
            h: h as u32,
            w: w as u32,
            o: g.out_channels as u32,
            o4: o4 as u32,
            oh: oh as u32,
            ow: ow as u32,
            kh: g.kernel[0] as u32,
            kw: g.kernel[1] as u32,
            stride_h: g.stride[0] as u32,
            stride_w: g.stride[1] as u32,
            pad_h: g.padding[0] as u32,
            pad_w: g.padding[1] as u32,
            dil_h: g.dilation[0] as u32,
            dil_w: g.dilation[1] as u32,
            cg: g.cin_per_group() as u32,
            og: g.cout_per_group() as u32,
            kq: self.kq,
            pad_word: zp * 0x0101_0101,
            zp_out: e.zero_point,
            lo: e.lo,
            hi: e.hi,
            total: total as u32,
            form,
            opaque: 0,
            in_scale,
            inv_out,
            offset,
            pad0,
            pad1,
            pad2,
        };
        Ok((p, out_shape))
    }

    /// The dispatches of a layer ending in a global average
    /// ([`QLayer::with_global_pool`]): split-K pass 1 (`tiled.wgsl`, the
    /// layer's splits, at least 1) into the scratch buffer, then
    /// `splitk.wgsl` with `POOL = 1`: one invocation per output word of each
    /// sample walks the pixels in row-major order, sums oneDNN's f32 values
    /// (the `addend` word of each pixel read at binding 2) and quantizes the
    /// average into `output` (`[N, O, 1, 1]`, NHWC4). Needs the split-K
    /// variant ([`ConvVariant::SplitK`]).
    pub fn dispatch_sum_pool(
        &self,
        ctx: &GpuContext,
        input: &wgpu::Buffer,
        input_shape: &[usize],
        addend: &wgpu::Buffer,
        output: &wgpu::Buffer,
    ) -> Result<Vec<super::Dispatch>> {
        self.dispatch_pool(ctx, input, input_shape, Some(addend), output)
    }

    /// [`GpuLayer::dispatch_sum_pool`] for either pooled form: with the sum
    /// addend (`Some`, [`crate::quant::EpilogueForm::OnednnSumPool`]) or
    /// without ([`crate::quant::EpilogueForm::OnednnPool`]; binding 2 then
    /// holds the packed weights, which the pooled pass does not read); and
    /// for oneDNN's sum with an f32 output
    /// ([`crate::quant::EpilogueForm::OnednnSumFloat`], `POOL = 2`: one
    /// invocation per output word writes its 4 f32 words, NHWC4F).
    pub fn dispatch_pool(
        &self,
        ctx: &GpuContext,
        input: &wgpu::Buffer,
        input_shape: &[usize],
        addend: Option<&wgpu::Buffer>,
        output: &wgpu::Buffer,
    ) -> Result<Vec<super::Dispatch>> {
        let has_sum = self.layer.sum_input().is_some();
        let pool = self.layer.global_pool();
        // oneDNN's sum with an f32 output: pass 2 writes f32 words (POOL 2).
        let sum_float = matches!(
            self.layer.epilogue.form,
            crate::quant::EpilogueForm::OnednnSumFloat { .. }
        );
        if has_sum != addend.is_some() || !(pool || sum_float) {
            return Err(Error::config(
                "conv2d with a global average",
                format!(
                    "the layer (global average: {}) has {} sum input, the call {}",
                    pool,
                    if has_sum { "a" } else { "no" },
                    if addend.is_some() {
                        "gives one"
                    } else {
                        "none"
                    }
                ),
            ));
        }
        let (params, out_shape) = self.params(input_shape)?;
        let plan = match self.plan(input_shape)? {
            // The pooled pass 2 needs partials: one split at least.
            Plan::Coop { kernel, splits: 0 } => Plan::Coop { kernel, splits: 1 },
            Plan::Tiled(c) => Plan::SplitK(c, 1),
            Plan::Gemv => Plan::SplitK(TileConfig::SKINNY, 1),
            p => p,
        };
        let Some((kernel, tiles, splits)) = plan.pass1() else {
            return Err(Error::config(
                "conv2d with a global average",
                format!(
                    "runs on the split-K kernels only, the layer has {:?}",
                    self.variant
                ),
            ));
        };
        let pooled = if pool {
            GpuTensor::gpu_bytes(&[out_shape[0], out_shape[1], 1, 1])?
        } else {
            GpuTensor::gpu_bytes(&out_shape)?
                .checked_mul(4)
                .ok_or_else(|| Error::TooLarge {
                    what: "conv2d f32 output (bytes)".into(),
                    needed: u64::MAX,
                    limit: u64::MAX,
                })?
        };
        let addend_short = match addend {
            Some(a) => a.size() < GpuTensor::gpu_bytes(&out_shape)?,
            None => false,
        };
        if output.size() < pooled || addend_short {
            return Err(Error::shape(
                "conv2d with a global average",
                format!("output buffer of {} bytes, {pooled} needed", output.size()),
            ));
        }
        let m_o4 = params.n as u64 * params.oh as u64 * params.ow as u64 * params.o4 as u64;
        let (pass1, scratch) = self.dispatch_pass1(ctx, kernel, tiles, splits, &params, input)?;
        let pass2 = ConvParams {
            total: if pool {
                params.n * params.o4
            } else {
                m_o4 as u32
            },
            ..params
        };
        Ok(vec![
            pass1,
            ctx.dispatch_bound(
                Kernel::SplitK,
                &self.with_exact_float(vec![
                    ("WG", WG as f64),
                    ("SPLITS", splits as f64),
                    ("POOL", if pool { 1.0 } else { 2.0 }),
                ]),
                bytemuck::bytes_of(&pass2),
                &[
                    (1, &scratch),
                    (2, addend.unwrap_or(&self.weights)),
                    (3, &self.chans),
                    (4, output),
                ],
                pass2.total,
                WG,
            )?,
        ])
    }

    /// Builds this layer's dispatches reading `input` (an NHWC4 tensor of
    /// `input_shape` quantized with `input_q`) and writing `output` (which
    /// must be large enough for the output shape): one, or two for split-K
    /// (pass 1 into the layer's scratch buffer, then pass 2 into `output`),
    /// to be recorded in order.
    pub fn dispatch(
        &self,
        ctx: &GpuContext,
        input: &wgpu::Buffer,
        input_shape: &[usize],
        input_q: crate::quant::QParams,
        output: &wgpu::Buffer,
    ) -> Result<Vec<super::Dispatch>> {
        if input_q != self.layer.input {
            return Err(Error::qparams(
                "conv2d input",
                format!(
                    "tensor has {:?}, the layer was quantized for {:?}",
                    input_q, self.layer.input
                ),
            ));
        }
        self.tune(ctx, input_shape)?;
        self.dispatch_with(ctx, self.plan(input_shape)?, input, input_shape, output)
    }

    /// [`GpuLayer::dispatch`] with a given plan (its input checked).
    fn dispatch_with(
        &self,
        ctx: &GpuContext,
        plan: Plan,
        input: &wgpu::Buffer,
        input_shape: &[usize],
        output: &wgpu::Buffer,
    ) -> Result<Vec<super::Dispatch>> {
        let (params, out_shape) = self.params_with(plan, input_shape)?;
        // An f32 output holds one word per channel (padded to 4) instead of one byte.
        let out_bytes = GpuTensor::gpu_bytes(&out_shape)?
            .checked_mul(if self.layer.float_output() { 4 } else { 1 })
            .ok_or_else(|| Error::TooLarge {
                what: "conv2d f32 output (bytes)".into(),
                needed: u64::MAX,
                limit: u64::MAX,
            })?;
        ctx.check_storage_size("conv2d output", out_bytes)?;
        if output.size() < out_bytes {
            return Err(Error::shape(
                "conv2d output buffer",
                format!("{} bytes, {out_bytes} needed", output.size()),
            ));
        }
        let buffers = [input, &self.weights, &self.chans, output];
        let bytes = bytemuck::bytes_of(&params);
        // EXACT_FLOAT (common.wgsl): compile the epilogues that call the float
        // prelude (forms 7 and 3) only into the pipelines of layers that have them;
        // elsewhere the override keeps its default and the branch is dead
        // (it about doubled every conv pipeline's compile time on lavapipe).
        let with_float = |v| self.with_exact_float(v);
        if let Some((kernel, tiles, splits)) = plan.pass1() {
            let (pass1, scratch) =
                self.dispatch_pass1(ctx, kernel, tiles, splits, &params, input)?;
            let pass2 = ConvParams {
                total: params.n * params.oh * params.ow * params.o4,
                ..params
            };
            return Ok(vec![
                pass1,
                ctx.dispatch_bound(
                    Kernel::SplitK,
                    &with_float(vec![("WG", WG as f64), ("SPLITS", splits as f64)]),
                    bytemuck::bytes_of(&pass2),
                    &[
                        (1, &scratch),
                        (2, &self.weights),
                        (3, &self.chans),
                        (4, output),
                    ],
                    pass2.total,
                    WG,
                )?,
            ]);
        }
        Ok(match plan {
            Plan::Tiled(c) => {
                c.check(&ctx.limits())?;
                // `params.total` counts workgroups here.
                vec![ctx.dispatch(
                    Kernel::Tiled,
                    &with_float(tile_constants(c, 0)),
                    bytes,
                    &buffers,
                    params.total,
                    1,
                )?]
            }
            Plan::Coop { kernel, .. } => vec![ctx.dispatch(
                kernel,
                &with_float(vec![]),
                bytes,
                &buffers,
                params.total,
                1,
            )?],
            Plan::Gemv => vec![ctx.dispatch(
                Kernel::Gemv,
                &with_float(vec![("WG", GEMV_WG as f64), ("GW", GEMV_GW as f64)]),
                bytes,
                &buffers,
                params.total,
                1,
            )?],
            Plan::SplitK(..) => unreachable!("two-pass plans return above"),
            Plan::Depthwise => vec![ctx.dispatch(
                Kernel::Depthwise,
                &with_float(vec![("WG", WG as f64)]),
                bytes,
                &buffers,
                params.total,
                WG,
            )?],
            Plan::Direct { gather } => vec![ctx.dispatch(
                Kernel::Conv2d,
                &with_float(vec![("WG", WG as f64), ("GATHER", gather as u8 as f64)]),
                bytes,
                &buffers,
                params.total,
                WG,
            )?],
        })
    }

    /// Split-K pass 1 of `kernel` (`tiled.wgsl` with `tiles`, or a coop
    /// kernel) over `splits` K splits, writing the layer's scratch buffer
    /// (grown to fit); returns the dispatch and that buffer. `params` is
    /// the layer's uniform block for the input shape (`total`: the tiles).
    fn dispatch_pass1(
        &self,
        ctx: &GpuContext,
        kernel: Kernel,
        tiles: Option<TileConfig>,
        splits: u32,
        params: &ConvParams,
        input: &wgpu::Buffer,
    ) -> Result<(super::Dispatch, wgpu::Buffer)> {
        if let Some(c) = tiles {
            c.check(&ctx.limits())?;
        }
        let m_o4 = params.n as u64 * params.oh as u64 * params.ow as u64 * params.o4 as u64;
        let groups = params.total as u64 * splits as u64;
        let words = m_o4 * 4 * splits as u64;
        if groups > u32::MAX as u64 || words > u32::MAX as u64 {
            return Err(Error::TooLarge {
                what: "split-K partial accumulators (words)".into(),
                needed: words.max(groups),
                limit: u32::MAX as u64,
            });
        }
        let scratch = self.scratch(ctx, words * 4)?;
        let pass1 = ConvParams {
            total: groups as u32,
            ..*params
        };
        let constants = match tiles {
            Some(c) => tile_constants(c, splits),
            // coop.wgsl takes the split count from `total`.
            None => vec![("SPLIT", 1.0)],
        };
        let d = ctx.dispatch(
            kernel,
            &constants,
            bytemuck::bytes_of(&pass1),
            &[input, &self.weights, &self.chans, &scratch],
            pass1.total,
            1,
        )?;
        Ok((d, scratch))
    }

    /// Whether the layer's epilogue calls the float prelude
    /// (`shaders/float.wgsl`; today form 7, oneDNN's swish, and form 3, the
    /// sum post-op's fused multiply-add): its pipelines
    /// set the override `EXACT_FLOAT` of `shaders/common.wgsl`, without which
    /// those branches are dead code. A new form that calls `onednn_swish`,
    /// `ffma` or `fdiv` must be listed here.
    fn exact_float(&self) -> bool {
        matches!(
            self.layer.epilogue.form,
            crate::quant::EpilogueForm::OnednnSwish { .. }
                | crate::quant::EpilogueForm::OnednnSum { .. }
                | crate::quant::EpilogueForm::OnednnFloat {
                    post: crate::quant::OnednnPost::Swish,
                    ..
                }
        )
    }

    /// `constants` with `EXACT_FLOAT = true` appended when
    /// [`GpuLayer::exact_float`] (other layers keep their pipelines).
    fn with_exact_float(
        &self,
        mut constants: Vec<(&'static str, f64)>,
    ) -> Vec<(&'static str, f64)> {
        if self.exact_float() {
            constants.push(("EXACT_FLOAT", 1.0));
        }
        constants
    }

    /// The split-K scratch buffer, at least `bytes` long (grown on demand).
    fn scratch(&self, ctx: &GpuContext, bytes: u64) -> Result<wgpu::Buffer> {
        ctx.check_storage_size("split-K partial accumulators", bytes)?;
        let mut slot = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = slot.as_ref().filter(|b| b.size() >= bytes) {
            return Ok(b.clone());
        }
        let b = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("qfuse split-K partials"),
            size: bytes.max(16),
            // COPY_SRC: read back by `raw_accumulators`.
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        *slot = Some(b.clone());
        Ok(b)
    }

    /// Not public API (tests): the layer's integer accumulators on `input`
    /// before the epilogue, as the tiled, split-K or tensor-core kernel the
    /// layer runs for this shape computes them (its pass 1 with one split):
    /// `[M][O4 * 4]` i32, M the output pixels, with the kernels' signed
    /// input (`Σ (x - 128) * w`; 0 past the output channels).
    #[doc(hidden)]
    pub fn raw_accumulators(&self, ctx: &GpuContext, input: &GpuTensor) -> Result<Vec<i32>> {
        let (kernel, tiles) = match self.plan(input.shape())? {
            Plan::Tiled(c) | Plan::SplitK(c, _) => (Kernel::Tiled, Some(c)),
            Plan::Coop { kernel, .. } => (kernel, None),
            p => {
                return Err(Error::Unsupported(format!(
                    "raw accumulators of the {p:?} kernel"
                )))
            }
        };
        let (params, _) = self.params(input.shape())?;
        let (d, scratch) = self.dispatch_pass1(ctx, kernel, tiles, 1, &params, &input.buffer)?;
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            d.record(&mut pass);
        }
        ctx.submit_and_wait(enc)?;
        let words = params.n as u64 * params.oh as u64 * params.ow as u64 * params.o4 as u64 * 4;
        let bytes = ctx.read_buffer(&scratch, words * 4)?;
        Ok(bytemuck::pod_collect_to_vec::<u8, i32>(&bytes))
    }

    /// Records this layer's dispatches (one compute pass), reading `input`
    /// and writing `output`.
    pub fn encode(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        input: &GpuTensor,
        output: &wgpu::Buffer,
    ) -> Result<Vec<usize>> {
        let out_shape = self.layer.output_shape(input.shape())?;
        let ds = self.dispatch(ctx, &input.buffer, input.shape(), input.qparams(), output)?;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("qfuse conv2d"),
            timestamp_writes: None,
        });
        for d in &ds {
            d.record(&mut pass);
        }
        Ok(out_shape)
    }

    /// Runs the layer on a GPU tensor: its dispatches, one submit.
    pub fn run(&self, ctx: &GpuContext, input: &GpuTensor) -> Result<GpuTensor> {
        ctx.scoped("conv2d", || {
            if self.layer.float_output() {
                return Err(Error::Unsupported(
                    "GpuLayer::run of a layer with an f32 output (a GpuTensor holds quint8 bytes): run it in a GpuModel".into(),
                ));
            }
            let out_shape = self.layer.output_shape(input.shape())?;
            let out = GpuTensor::empty(ctx, &out_shape, self.layer.output)?;
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            self.encode(ctx, &mut enc, input, &out.buffer)?;
            ctx.submit_and_wait(enc)?;
            Ok(out)
        })
    }
}

/// The tensor-core kernel's known-answer check, run once when a context
/// opens a device with cooperative matrices (a failure turns the kernel off
/// for that context, with the reason in
/// [`super::AdapterReport::cooperative_matrix_off`]): a 1x1 conv over 1536
/// channels, 2 x 2 output tiles, whose accumulators reach the exactness
/// limit ([`coop_limit_data`]: chunks of 512 products of -128 x -128 =
/// 2^23, and odd products of 127 x 127 past 2^24 in total), against the
/// CPU's exact sums. `emulated`
/// runs the plain-WGSL primitives instead (tests).
#[doc(hidden)]
pub fn coop_self_check(ctx: &GpuContext, emulated: bool) -> Result<()> {
    let (c, o, h, w) = (1536usize, 72usize, 9usize, 8usize);
    let hw = h * w;
    let (x, weight) = coop_limit_data(c, o, hw);
    let q = crate::quant::QParams::new(1.0, 128)?;
    let layer = QLayer::new(
        LayerKind::Conv2d,
        crate::Conv2dGeometry::new(c, o, [1, 1]),
        weight,
        vec![1.0; o],
        vec![0.0; o],
        q,
        q,
        crate::Activation::None,
        crate::quant::Requant::Fbgemm,
    )?;
    let shape = [1, c, h, w];
    let (acc, _) = crate::ops::conv::conv2d_accumulators(&layer, &x, &shape)?;
    let g = GpuLayer::with_variant(
        ctx,
        &layer,
        ConvVariant::Coop {
            emulated,
            splits: None,
        },
    )?;
    let t = GpuTensor::upload(ctx, &x, &shape, q)?;
    let got = g.raw_accumulators(ctx, &t)?;
    // zero point 128: the kernels' Σ (x - 128) * w is the CPU's Σ (x - zp) * w.
    for p in 0..hw {
        for oc in 0..o {
            let (want, have) = (acc[oc * hw + p], got[p * o + oc] as i64);
            if want != have {
                return Err(Error::Gpu(format!(
                    "tensor-core self-check: pixel {p} channel {oc}: {have}, expected {want}"
                )));
            }
        }
    }
    Ok(())
}

/// Not public API (tests): the input bytes (NCHW, one image of `c`
/// channels and `hw` pixels) and weights (`o` x `c`) of a 1x1 conv at the
/// tensor-core kernel's exactness limit: channel 0 of pixels 0..8 multiplies
/// -128 (byte 0 after the shift) by -128 at every K value (chunks of exactly
/// 2^23), channel 1 of pixels 8..16 multiplies 127 by 127 (odd products,
/// past 2^24 in total from 1040 channels on), other values flipped to 127
/// here and there so that a transposed or shifted fragment shows.
#[doc(hidden)]
pub fn coop_limit_data(c: usize, o: usize, hw: usize) -> (Vec<u8>, Vec<i8>) {
    let x = (0..c * hw)
        .map(|i| {
            let (ch, p) = (i / hw, i % hw);
            if (8..16).contains(&p) || (p >= 16 && (p * 7 + ch) % 11 == 0) {
                255
            } else {
                0
            }
        })
        .collect();
    let weight = (0..o * c)
        .map(|i| {
            let (oc, ch) = (i / c, i % c);
            if oc == 1 || (oc > 1 && (oc * 3 + ch) % 13 == 0) {
                127
            } else {
                -128
            }
        })
        .collect();
    (x, weight)
}

/// The pipeline-overridable constants of `tiled.wgsl` for tiles `c` and
/// `splits` (0: one pass).
fn tile_constants(c: TileConfig, splits: u32) -> Vec<(&'static str, f64)> {
    let mut v = vec![
        ("WG", c.workgroup_size() as f64),
        ("TM", c.tm as f64),
        ("TN", c.tn as f64),
        ("KT", c.kt as f64),
        ("SPLITS", splits as f64),
    ];
    // Only when set: the presets of before keep their pipelines' keys.
    if c.rm != 4 {
        v.push(("RM", c.rm as f64));
    }
    if c.prefetch {
        v.push(("PF", 1.0));
    }
    v
}

/// Splits a workgroup count over x and y so that neither exceeds the device's
/// per-dimension limit (`(groups, 1)` when it fits in x); kernels recover the
/// linear index as `x + y * nx * WG`. [`Error::TooLarge`] past limit².
/// Every dispatch of qfuse is sized this way, [`GpuContext::dispatch_custom`]
/// included; use it to size dispatches of a [`GpuContext::custom_pipeline`]
/// bound by hand.
pub fn dispatch_size(ctx: &GpuContext, groups: u32) -> Result<(u32, u32)> {
    let max = ctx.limits().max_compute_workgroups_per_dimension.max(1);
    if groups <= max {
        return Ok((groups.max(1), 1));
    }
    let gy = groups.div_ceil(max);
    if gy > max {
        return Err(Error::TooLarge {
            what: "dispatch workgroups".into(),
            needed: groups as u64,
            limit: max as u64 * max as u64,
        });
    }
    Ok((max, gy))
}
