//! The chip's specified peaks (from a small table keyed by adapter name, or
//! the command line), and the SM clock measured during a run (an
//! `nvidia-smi` CSV log), so that rates can be read against the datasheet
//! as well as against the harness's own measured ceilings.

use serde::Serialize;

/// One chip of the table. Rates are computed from units per SM per clock
/// at the boost clock, except where the datasheet's number is used as is
/// (`f16_tensor`, `mem`).
struct Chip {
    /// Matched as a case-insensitive substring of the adapter name; the
    /// first match wins, so more specific patterns come first.
    pattern: &'static str,
    chip: &'static str,
    sms: u32,
    /// Boost clock of the datasheet's CUDA-core numbers, MHz.
    boost_mhz: f64,
    /// Packed int8 dot products (DP4A) per SM per clock.
    dp4a_per_sm_clock: f64,
    /// f32 FMAs per SM per clock.
    fma_per_sm_clock: f64,
    /// Dense f16 tensor-core flop/s (datasheet, without sparsity) and the
    /// clock it corresponds to.
    f16_tensor: Option<(f64, f64)>,
    /// Memory bandwidth, bytes/s (datasheet).
    mem: Option<f64>,
    note: &'static str,
}

/// Hopper and Ampere data-center parts. DP4A is assumed to issue at the
/// 32-bit integer multiply-add rate the CUDA C++ Programming Guide lists for
/// compute capability 8.0 and 9.0 (64 per SM per clock); each counts 8 ops.
const CHIPS: &[Chip] = &[
    Chip {
        pattern: "H100 PCIe",
        chip: "NVIDIA H100 PCIe",
        sms: 114,
        boost_mhz: 1755.0,
        dp4a_per_sm_clock: 64.0,
        fma_per_sm_clock: 128.0,
        f16_tensor: Some((756.0e12, 1620.0)),
        mem: Some(2.0e12),
        note: "H100 PCIe datasheet: 51 T f32, 756 T f16 tensor dense, 2.0 TB/s",
    },
    Chip {
        pattern: "H200",
        chip: "NVIDIA H200 (SXM)",
        sms: 132,
        boost_mhz: 1980.0,
        dp4a_per_sm_clock: 64.0,
        fma_per_sm_clock: 128.0,
        f16_tensor: Some((989.4e12, 1830.0)),
        mem: Some(4.8e12),
        note: "H200 SXM datasheet: 67 T f32, 989 T f16 tensor dense (1979 T with sparsity), 4.8 TB/s; an H200 NVL runs lower clocks",
    },
    Chip {
        pattern: "H100",
        chip: "NVIDIA H100 SXM",
        sms: 132,
        boost_mhz: 1980.0,
        dp4a_per_sm_clock: 64.0,
        fma_per_sm_clock: 128.0,
        f16_tensor: Some((989.4e12, 1830.0)),
        mem: Some(3.35e12),
        note: "H100 SXM datasheet: 67 T f32, 989 T f16 tensor dense, 3.35 TB/s",
    },
    Chip {
        pattern: "A100",
        chip: "NVIDIA A100",
        sms: 108,
        boost_mhz: 1410.0,
        dp4a_per_sm_clock: 64.0,
        fma_per_sm_clock: 64.0,
        f16_tensor: Some((312.0e12, 1410.0)),
        mem: None,
        note: "A100 datasheet: 19.5 T f32, 312 T f16 tensor dense; bandwidth depends on the model (1.56 to 2.04 TB/s)",
    },
];

/// Peaks given on the command line (`--peak-int8 T` etc.), each replacing
/// the table's value.
#[derive(Clone, Debug, Default)]
pub struct PeakOverrides {
    /// int8 op/s (a packed dot + accumulate = 8 ops).
    pub int8_ops_per_s: Option<f64>,
    pub f32_flops_per_s: Option<f64>,
    pub f16_tensor_flops_per_s: Option<f64>,
    pub mem_bytes_per_s: Option<f64>,
    /// The clock (MHz) the given peaks are specified at (to rescale them to
    /// a measured clock).
    pub clock_mhz: Option<f64>,
}

impl PeakOverrides {
    fn any(&self) -> bool {
        self.int8_ops_per_s.is_some()
            || self.f32_flops_per_s.is_some()
            || self.f16_tensor_flops_per_s.is_some()
            || self.mem_bytes_per_s.is_some()
    }
}

/// The chip's specified peaks.
#[derive(Clone, Debug, Serialize)]
pub struct SpecPeaks {
    /// The table entry that matched the adapter name, or "command line".
    pub chip: String,
    /// How the numbers were obtained (formula, datasheet, overrides).
    pub source: String,
    /// Packed int8 dot (DP4A): SMs x DP4A/SM/clock x 8 ops x boost clock.
    pub int8_ops_per_s: Option<f64>,
    /// f32 FMA: SMs x FMA/SM/clock x 2 flops x boost clock.
    pub f32_flops_per_s: Option<f64>,
    /// Dense f16 tensor-core flop/s (datasheet).
    pub f16_tensor_flops_per_s: Option<f64>,
    /// Memory bandwidth (datasheet), bytes/s.
    pub mem_bytes_per_s: Option<f64>,
    pub sms: Option<u32>,
    /// The clock the int8 and f32 peaks are computed at, MHz.
    pub clock_mhz: Option<f64>,
    /// The clock the f16 tensor figure corresponds to, MHz.
    pub f16_clock_mhz: Option<f64>,
}

impl SpecPeaks {
    /// The peaks of the adapter named `adapter` (table), with `o` applied;
    /// `None` when the table has no entry and nothing was given.
    pub fn lookup(adapter: &str, o: &PeakOverrides) -> Option<SpecPeaks> {
        let lower = adapter.to_lowercase();
        let chip = CHIPS
            .iter()
            .find(|c| lower.contains(&c.pattern.to_lowercase()));
        let mut p = match chip {
            Some(c) => {
                let clk = c.boost_mhz * 1e6;
                SpecPeaks {
                    chip: c.chip.into(),
                    source: format!(
                        "table (adapter name contains {:?}): int8 = {} SMs x {} DP4A/SM/clock x 8 ops x {} MHz, f32 = {} SMs x {} FMA/SM/clock x 2 x {} MHz; {}",
                        c.pattern, c.sms, c.dp4a_per_sm_clock, c.boost_mhz, c.sms, c.fma_per_sm_clock, c.boost_mhz, c.note
                    ),
                    int8_ops_per_s: Some(c.sms as f64 * c.dp4a_per_sm_clock * 8.0 * clk),
                    f32_flops_per_s: Some(c.sms as f64 * c.fma_per_sm_clock * 2.0 * clk),
                    f16_tensor_flops_per_s: c.f16_tensor.map(|t| t.0),
                    mem_bytes_per_s: c.mem,
                    sms: Some(c.sms),
                    clock_mhz: Some(c.boost_mhz),
                    f16_clock_mhz: c.f16_tensor.map(|t| t.1),
                }
            }
            None if o.any() => SpecPeaks {
                chip: "command line".into(),
                source: "command line".into(),
                int8_ops_per_s: None,
                f32_flops_per_s: None,
                f16_tensor_flops_per_s: None,
                mem_bytes_per_s: None,
                sms: None,
                clock_mhz: None,
                f16_clock_mhz: None,
            },
            None => return None,
        };
        let mut given = vec![];
        for (what, v, slot) in [
            ("int8", o.int8_ops_per_s, &mut p.int8_ops_per_s),
            ("f32", o.f32_flops_per_s, &mut p.f32_flops_per_s),
            (
                "f16",
                o.f16_tensor_flops_per_s,
                &mut p.f16_tensor_flops_per_s,
            ),
            ("bw", o.mem_bytes_per_s, &mut p.mem_bytes_per_s),
        ] {
            if let Some(v) = v {
                *slot = Some(v);
                given.push(what);
            }
        }
        if let Some(c) = o.clock_mhz {
            p.clock_mhz = Some(c);
            p.f16_clock_mhz = Some(c);
            given.push("clock");
        }
        if !given.is_empty() && chip.is_some() {
            p.source = format!(
                "{}; overridden on the command line: {}",
                p.source,
                given.join(", ")
            );
        }
        Some(p)
    }

    /// The same peaks at the SM clock `mhz` (each scaled by `mhz` over the
    /// clock it is specified at; the bandwidth does not scale).
    pub fn at_clock(&self, mhz: f64) -> SpecPeaks {
        let scale = |v: Option<f64>, at: Option<f64>| match (v, at) {
            (Some(v), Some(at)) if at > 0.0 => Some(v * mhz / at),
            _ => None,
        };
        SpecPeaks {
            chip: self.chip.clone(),
            source: format!(
                "{} rescaled to the measured median SM clock {mhz:.0} MHz",
                self.chip
            ),
            int8_ops_per_s: scale(self.int8_ops_per_s, self.clock_mhz),
            f32_flops_per_s: scale(self.f32_flops_per_s, self.clock_mhz),
            f16_tensor_flops_per_s: scale(self.f16_tensor_flops_per_s, self.f16_clock_mhz),
            mem_bytes_per_s: self.mem_bytes_per_s,
            sms: self.sms,
            clock_mhz: Some(mhz),
            f16_clock_mhz: Some(mhz),
        }
    }
}

/// SM clock samples of a run (`nvidia-smi --query-gpu=timestamp,clocks.sm
/// --format=csv -lms 200`, optionally with a `utilization.gpu` column).
#[derive(Clone, Debug, Serialize)]
pub struct ClockStats {
    pub source: String,
    pub samples: usize,
    pub min_mhz: f64,
    pub median_mhz: f64,
    pub max_mhz: f64,
    /// Median over the samples with GPU utilization > 0, when the log has
    /// a utilization column (idle gaps drop the clock).
    pub busy_median_mhz: Option<f64>,
    pub busy_samples: Option<usize>,
}

impl ClockStats {
    /// The clock the peaks are rescaled to: the busy median where known.
    pub fn clock_mhz(&self) -> f64 {
        self.busy_median_mhz.unwrap_or(self.median_mhz)
    }

    /// Parses an nvidia-smi CSV log. The clock column is the one whose
    /// header names `clocks.sm` or `clocks.current.sm` (else the last
    /// column); values like `1980 MHz`. Lines that do not parse (headers,
    /// `[N/A]`, a line cut off while the log was being written) are skipped.
    pub fn parse(source: &str, text: &str) -> Option<ClockStats> {
        let mut clock_col = None;
        let mut util_col = None;
        let mut clocks = vec![];
        let mut busy = vec![];
        let mut has_util = false;
        for line in text.lines() {
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            if line.contains("clocks.") || line.contains("timestamp") {
                clock_col = cols
                    .iter()
                    .position(|c| c.starts_with("clocks.sm") || c.starts_with("clocks.current.sm"));
                util_col = cols.iter().position(|c| c.starts_with("utilization.gpu"));
                continue;
            }
            let num = |i: usize| -> Option<f64> {
                cols.get(i)?.split_whitespace().next()?.parse::<f64>().ok()
            };
            let Some(mhz) = num(clock_col.unwrap_or(cols.len().saturating_sub(1))) else {
                continue;
            };
            if !(mhz.is_finite() && mhz > 0.0) {
                continue;
            }
            clocks.push(mhz);
            if let Some(u) = util_col.and_then(num) {
                has_util = true;
                if u > 0.0 {
                    busy.push(mhz);
                }
            }
        }
        if clocks.is_empty() {
            return None;
        }
        let med = |v: &mut Vec<f64>| crate::timing::median(v);
        let samples = clocks.len();
        let (min, max) = clocks
            .iter()
            .fold((f64::INFINITY, 0f64), |(a, b), &c| (a.min(c), b.max(c)));
        let busy_samples = has_util.then_some(busy.len());
        Some(ClockStats {
            source: source.into(),
            samples,
            min_mhz: min,
            median_mhz: med(&mut clocks),
            max_mhz: max,
            busy_median_mhz: (has_util && !busy.is_empty()).then(|| med(&mut busy)),
            busy_samples,
        })
    }
}

/// A rate as a fraction of a peak, if the peak is known.
pub fn frac(rate: f64, peak: Option<f64>) -> Option<f64> {
    peak.filter(|p| *p > 0.0).map(|p| rate / p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h200_peaks_from_the_table() {
        let p = SpecPeaks::lookup("NVIDIA H200", &PeakOverrides::default()).unwrap();
        let int8 = p.int8_ops_per_s.unwrap();
        // 132 SMs x 64 x 8 ops x 1.98 GHz = 133.8 T op/s.
        assert!((int8 - 133.8e12).abs() < 0.1e12, "{int8}");
        let f32 = p.f32_flops_per_s.unwrap();
        assert!((f32 - 66.9e12).abs() < 0.1e12, "{f32}");
        assert_eq!(p.f16_tensor_flops_per_s, Some(989.4e12));
        // At a measured 1500 MHz the compute peaks scale, the bandwidth does not.
        let m = p.at_clock(1500.0);
        assert!((m.int8_ops_per_s.unwrap() - int8 * 1500.0 / 1980.0).abs() < 1e6);
        assert!((m.f16_tensor_flops_per_s.unwrap() - 989.4e12 * 1500.0 / 1830.0).abs() < 1e6);
        assert_eq!(m.mem_bytes_per_s, Some(4.8e12));
        // H100 PCIe is not taken for an H100 SXM, and vice versa.
        let pcie = SpecPeaks::lookup("NVIDIA H100 PCIe", &PeakOverrides::default()).unwrap();
        assert_eq!(pcie.sms, Some(114));
        let sxm = SpecPeaks::lookup("NVIDIA H100 80GB HBM3", &PeakOverrides::default()).unwrap();
        assert_eq!((sxm.sms, sxm.mem_bytes_per_s), (Some(132), Some(3.35e12)));
        assert!(SpecPeaks::lookup(
            "llvmpipe (LLVM 15.0.6, 256 bits)",
            &PeakOverrides::default()
        )
        .is_none());
    }

    #[test]
    fn overrides_replace_the_table() {
        let o = PeakOverrides {
            int8_ops_per_s: Some(100e12),
            ..Default::default()
        };
        let p = SpecPeaks::lookup("NVIDIA H200", &o).unwrap();
        assert_eq!(p.int8_ops_per_s, Some(100e12));
        assert!(p.source.contains("overridden"), "{}", p.source);
        let q = SpecPeaks::lookup("llvmpipe", &o).unwrap();
        assert_eq!(
            (q.chip.as_str(), q.int8_ops_per_s, q.f32_flops_per_s),
            ("command line", Some(100e12), None)
        );
    }

    #[test]
    fn parses_an_nvidia_smi_clock_log() {
        let log = "timestamp, clocks.current.sm [MHz]\n\
                   2026/11/30 12:00:00.100, 1980 MHz\n\
                   2026/11/30 12:00:00.300, 1755 MHz\n\
                   2026/11/30 12:00:00.500, 1980 MHz\n\
                   2026/11/30 12:00:00.700, [N/A]\n\
                   2026/11/30 12:00:00.900, 345 MHz\n\
                   2026/11/30 12:00:01.1";
        let c = ClockStats::parse("test", log).unwrap();
        assert_eq!(c.samples, 4);
        assert_eq!((c.min_mhz, c.max_mhz), (345.0, 1980.0));
        assert_eq!(c.median_mhz, (1755.0 + 1980.0) / 2.0);
        assert_eq!(c.busy_median_mhz, None);
        let log = "timestamp, clocks.sm [MHz], utilization.gpu [%]\n\
                   2026/11/30 12:00:00.100, 1980 MHz, 100 %\n\
                   2026/11/30 12:00:00.300, 1410 MHz, 0 %\n\
                   2026/11/30 12:00:00.500, 1965 MHz, 97 %\n";
        let c = ClockStats::parse("test", log).unwrap();
        assert_eq!(c.samples, 3);
        assert_eq!(c.median_mhz, 1965.0);
        assert_eq!(
            (c.busy_median_mhz, c.busy_samples),
            (Some((1980.0 + 1965.0) / 2.0), Some(2))
        );
        assert_eq!(c.clock_mhz(), (1980.0 + 1965.0) / 2.0);
        assert!(ClockStats::parse("empty", "timestamp, clocks.sm [MHz]\n").is_none());
    }
}
