//! The autotuner: per layer shape, the conv kernel variant measured fastest
//! on this adapter, cached per adapter (in memory, and in a JSON file when
//! one is set).
//!
//! A layer that runs [`ConvVariant::Tuned`] looks its input shape up by a
//! [`TuneKey`] (kernel size, stride, K words, output words, and the output
//! pixels rounded up to a power of two: a shape bucket, as cubecl's tuner
//! keys its cache). On a miss, its first dispatch times every candidate
//! ([`tune_candidates`]: the tiled presets, split-K per shape and pinned, the
//! tensor-core kernel where offered, GEMV where it applies; they share the
//! layer's weight packing, so one upload runs any of them) on scratch
//! buffers of that shape, with GPU timestamps where the device has them (the
//! wall clock otherwise), and keeps the fastest. Every candidate gives the
//! same bytes (each is held bit-exact against the CPU reference), so the
//! choice changes the speed only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::conv::{ConvVariant, TileConfig};
use crate::error::{Error, Result};

/// The environment variable that turns autotuning on (`1`) or off (`0`);
/// unset, it is on for GPUs (discrete, integrated, virtual) and off for CPU
/// adapters (lavapipe, WARP), where measuring costs more than it saves.
pub const AUTOTUNE_ENV: &str = "QFUSE_AUTOTUNE";
/// The environment variable naming a JSON file the tuner loads at context
/// creation and rewrites after each new measurement (per adapter; see
/// [`super::GpuContext::set_tune_cache`]).
pub const TUNE_CACHE_ENV: &str = "QFUSE_TUNE_CACHE";

/// A shape bucket of the tuner's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TuneKey {
    /// Kernel height and width.
    pub kernel: [u32; 2],
    /// Stride.
    pub stride: [u32; 2],
    /// K words of the reduction (kh * kw * ceil(C / 4)).
    pub kq: u32,
    /// Output words (ceil(O / 4)).
    pub o4: u32,
    /// Output pixels (N * OH * OW) rounded up to a power of two.
    pub rows: u32,
}

impl std::fmt::Display for TuneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "k{}x{} s{}x{} kq{} o4_{} m{}",
            self.kernel[0],
            self.kernel[1],
            self.stride[0],
            self.stride[1],
            self.kq,
            self.o4,
            self.rows
        )
    }
}

impl std::str::FromStr for TuneKey {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("not a tuner key: {s:?}");
        let parts: Vec<&str> = s.split(' ').collect();
        let [k, st, kq, o4, m] = parts[..] else {
            return Err(bad());
        };
        let pair = |p: &str, tag: &str| -> std::result::Result<[u32; 2], String> {
            let (a, b) = p
                .strip_prefix(tag)
                .and_then(|r| r.split_once('x'))
                .ok_or_else(bad)?;
            Ok([a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?])
        };
        let num = |p: &str, tag: &str| -> std::result::Result<u32, String> {
            p.strip_prefix(tag)
                .ok_or_else(bad)?
                .parse()
                .map_err(|_| bad())
        };
        Ok(TuneKey {
            kernel: pair(k, "k")?,
            stride: pair(st, "s")?,
            kq: num(kq, "kq")?,
            o4: num(o4, "o4_")?,
            rows: num(m, "m")?,
        })
    }
}

/// A variant as the cache file writes it: `tiled:TMxTNxKT` (then `r8` for
/// the 8-row register block, `pf` for prefetch), `splitk:auto`,
/// `splitk:S`, `coop:auto`, `coop:S`, `gemv`.
pub fn variant_name(v: ConvVariant) -> Option<String> {
    Some(match v {
        ConvVariant::Tiled(Some(c)) => format!(
            "tiled:{}x{}x{}{}{}",
            c.tm,
            c.tn,
            c.kt,
            if c.rm == 8 { "r8" } else { "" },
            if c.prefetch { "pf" } else { "" }
        ),
        ConvVariant::SplitK {
            splits: None,
            tiles: None,
        } => "splitk:auto".into(),
        ConvVariant::SplitK {
            splits: Some(s),
            tiles: None,
        } => format!("splitk:{s}"),
        ConvVariant::Coop {
            emulated: false,
            splits: None,
        } => "coop:auto".into(),
        ConvVariant::Coop {
            emulated: false,
            splits: Some(s),
        } => format!("coop:{s}"),
        ConvVariant::Gemv => "gemv".into(),
        _ => return None,
    })
}

/// The inverse of [`variant_name`].
pub fn parse_variant(s: &str) -> Option<ConvVariant> {
    let (kind, arg) = s.split_once(':').unwrap_or((s, ""));
    Some(match (kind, arg) {
        ("gemv", "") => ConvVariant::Gemv,
        ("splitk", "auto") => ConvVariant::SplitK {
            splits: None,
            tiles: None,
        },
        ("splitk", n) => ConvVariant::SplitK {
            splits: Some(n.parse().ok().filter(|&s| s > 0)?),
            tiles: None,
        },
        ("coop", "auto") => ConvVariant::Coop {
            emulated: false,
            splits: None,
        },
        ("coop", n) => ConvVariant::Coop {
            emulated: false,
            splits: Some(n.parse().ok().filter(|&s| s > 0)?),
        },
        ("tiled", t) => {
            let (t, prefetch) = match t.strip_suffix("pf") {
                Some(t) => (t, true),
                None => (t, false),
            };
            let (t, rm) = match t.strip_suffix("r8") {
                Some(t) => (t, 8),
                None => (t, 4),
            };
            let v: Vec<u32> = t
                .split('x')
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            let [tm, tn, kt] = v[..] else { return None };
            ConvVariant::Tiled(Some(TileConfig {
                rm,
                prefetch,
                ..TileConfig::new(tm, tn, kt)
            }))
        }
        _ => return None,
    })
}

/// One measurement: a candidate and its time per run in seconds (None if it
/// could not run: a device limit).
pub type Timing = (ConvVariant, Option<f64>);

/// The tuner's state, one per [`super::GpuContext`].
#[derive(Debug, Default)]
pub struct Tuner {
    /// The adapter the entries belong to (`name | driver | backend`).
    pub(crate) adapter: String,
    pub(crate) entries: Mutex<BTreeMap<TuneKey, ConvVariant>>,
    /// What each measurement found, in order (for reports).
    pub(crate) log: Mutex<Vec<(TuneKey, Vec<Timing>)>>,
    pub(crate) path: Mutex<Option<PathBuf>>,
    pub(crate) enabled: std::sync::atomic::AtomicBool,
}

/// The cache file's form: `{"qfuse_tune_cache": 1, "adapters": {ADAPTER:
/// {KEY: VARIANT}}}`.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct CacheFile {
    qfuse_tune_cache: u32,
    adapters: BTreeMap<String, BTreeMap<String, String>>,
}

impl Tuner {
    pub(crate) fn new(adapter: String, enabled: bool) -> Self {
        Tuner {
            adapter,
            enabled: enabled.into(),
            ..Default::default()
        }
    }

    /// The cached variant for a key.
    pub(crate) fn get(&self, key: &TuneKey) -> Option<ConvVariant> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    /// Records a measurement and its winner; rewrites the cache file if set.
    pub(crate) fn put(&self, key: TuneKey, best: ConvVariant, timings: Vec<Timing>) -> Result<()> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, best);
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key, timings));
        let path = self.path.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match path {
            Some(p) => self.save(&p),
            None => Ok(()),
        }
    }

    fn read_file(path: &Path) -> Result<CacheFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CacheFile::default()),
            Err(e) => return Err(file_error(path, e.to_string())),
        };
        let bad = |why: String| file_error(path, format!("{why} (delete the file to start over)"));
        let f: CacheFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if f.qfuse_tune_cache != 1 {
            return Err(bad(format!("version {}, expected 1", f.qfuse_tune_cache)));
        }
        for (adapter, m) in &f.adapters {
            for (k, v) in m {
                k.parse::<TuneKey>()
                    .map_err(|e| bad(format!("{adapter}: {e}")))?;
                parse_variant(v)
                    .ok_or_else(|| bad(format!("{adapter}: {k}: not a variant: {v:?}")))?;
            }
        }
        Ok(f)
    }

    /// Loads this adapter's entries from `path` (a missing file is an empty
    /// cache) and keeps `path` for writing.
    pub(crate) fn load(&self, path: &Path) -> Result<()> {
        let f = Self::read_file(path)?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = f.adapters.get(&self.adapter) {
            for (k, v) in m {
                // Checked by read_file.
                if let (Ok(k), Some(v)) = (k.parse(), parse_variant(v)) {
                    entries.insert(k, v);
                }
            }
        }
        *self.path.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_path_buf());
        Ok(())
    }

    /// Writes this adapter's entries into `path` (keeping other adapters'),
    /// through a temporary file renamed over it: never a partial file.
    fn save(&self, path: &Path) -> Result<()> {
        let mut f = Self::read_file(path).unwrap_or_default();
        f.qfuse_tune_cache = 1;
        let mine: BTreeMap<String, String> = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), variant_name(*v)?)))
            .collect();
        f.adapters.insert(self.adapter.clone(), mine);
        let text = serde_json::to_string_pretty(&f).map_err(|e| file_error(path, e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        let io = |e: std::io::Error| file_error(path, e.to_string());
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

fn file_error(path: &Path, detail: String) -> Error {
    Error::File {
        path: path.display().to_string(),
        source: Box::new(Error::config("tuner cache", detail)),
    }
}

/// The variants the tuner times for `layer` on `ctx` (all share the tiled
/// weight packing): the tiled presets the device can run, split-K chosen
/// per shape and pinned to 2, 4, 8 and 16 splits, the tensor-core kernel
/// (per shape, and pinned to 2, 4 and 8 splits) where
/// [`super::GpuContext::cooperative_matrix`], and GEMV where it applies.
pub fn tune_candidates(ctx: &super::GpuContext, layer: &crate::QLayer) -> Vec<ConvVariant> {
    let limits = ctx.limits();
    let mut v: Vec<ConvVariant> = TileConfig::PRESETS
        .iter()
        .filter(|c| c.check(&limits).is_ok())
        .map(|&c| ConvVariant::Tiled(Some(c)))
        .collect();
    v.push(ConvVariant::SplitK {
        splits: None,
        tiles: None,
    });
    v.extend([2, 4, 8, 16].map(|s| ConvVariant::SplitK {
        splits: Some(s),
        tiles: None,
    }));
    if ctx.cooperative_matrix() {
        v.extend(
            [None, Some(2), Some(4), Some(8)].map(|splits| ConvVariant::Coop {
                emulated: false,
                splits,
            }),
        );
    }
    v.push(ConvVariant::Gemv);
    v.retain(|x| x.applies(layer));
    v
}
