//! `resize` (ONNX Runtime's bilinear Resize; ORT vectors in
//! `tests/onnx_model.rs`): the GPU equals the CPU reference on seeded random
//! cases (linear and cubic, every coordinate transformation, both rules,
//! uint8 and int8, up-
//! and downscaling, extreme scales for the exact f32 products and
//! divisions), the file form round-trips, and bad parameters are errors.

mod common;

use common::{first_mismatch, gpu, Rng};
use qfuse::model::{DType, Model, Node, Op, TensorInfo, Value};
use qfuse::ops::resize::{Coord, Resize, ResizeMode, ResizeRule};
use qfuse::{Error, GpuModel, QParams, Requant};

fn model(x: [usize; 3], q: QParams, r: Resize) -> qfuse::Result<Model> {
    Model::new(
        Requant::OnnxRuntime,
        vec![(
            "x".into(),
            TensorInfo {
                shape: x.to_vec(),
                dtype: DType::QUInt8(q),
            },
        )],
        vec!["r".into()],
        vec![Node {
            name: "r".into(),
            op: Op::Resize(r),
            inputs: vec!["x".into()],
        }],
    )
}

fn qparams(rng: &mut Rng, signed: bool) -> QParams {
    let e = rng.pick(&[-38i32, -20, -8, -3, 0, 2, 9, 25, 38]);
    let scale = (1.0 + rng.f32()) * 2f32.powi(e);
    if signed {
        QParams::new_i8(scale, rng.range(0, 255) as i32 - 128).unwrap()
    } else {
        QParams::new(scale, rng.range(0, 255) as i32).unwrap()
    }
}

/// One random resize: input `[C, H, W]`, its qparams, the op.
fn random_case(rng: &mut Rng) -> ([usize; 3], QParams, Resize) {
    let signed = rng.range(0, 1) == 1;
    let q = qparams(rng, signed);
    let x = [rng.range(1, 9), rng.range(1, 9), rng.range(1, 9)];
    let coord = rng.pick(&[
        Coord::HalfPixel,
        Coord::PytorchHalfPixel,
        Coord::Asymmetric,
        Coord::AlignCorners,
    ]);
    let mut size = [0; 2];
    let mut scales = [0f32; 2];
    for k in 0..2 {
        let d = x[k + 1];
        if rng.range(0, 1) == 0 {
            // sizes given: scale = f32(o) / f32(d)
            size[k] = rng.range(1, 3 * d + 2);
            scales[k] = size[k] as f32 / d as f32;
        } else {
            // scales given: o = trunc(scale * d)
            let s = rng.pick(&[0.5f32, 0.75, 1.0, 1.3, 1.5, 2.0, 2.5, 3.0, 4.0]);
            scales[k] = s;
            size[k] = ((s * d as f32) as usize).max(1);
        }
    }
    let (rule, out) = if rng.range(0, 2) == 0 {
        (ResizeRule::Truncate, q)
    } else {
        let o = if rng.range(0, 3) == 0 {
            q
        } else {
            // near the input's scale (ties, saturation) or anywhere
            match rng.range(0, 1) {
                0 => {
                    let s =
                        (q.scale * rng.pick(&[0.5f32, 0.3, 1.0, 2.0, 0.125])).max(2f32.powi(-40));
                    let z = rng.range(0, 255) as i32;
                    if signed {
                        QParams::new_i8(s, z - 128).unwrap()
                    } else {
                        QParams::new(s, z).unwrap()
                    }
                }
                _ => qparams(rng, signed),
            }
        };
        (ResizeRule::Requantize, o)
    };
    // cubic (rule requantize only) in a third of the requantizing cases
    let mode = if rule == ResizeRule::Requantize && rng.range(0, 2) == 0 {
        ResizeMode::Cubic(rng.pick(&[-0.75f32, -0.5, -0.6]))
    } else {
        ResizeMode::Linear
    };
    (
        x,
        q,
        Resize {
            size,
            scales,
            coord,
            rule,
            out,
            mode,
        },
    )
}

#[test]
fn gpu_equals_cpu_on_random_resizes() {
    let ctx = gpu();
    let seed = 0x5e5e_2026u64;
    println!("seed {seed:#x}");
    let mut rng = Rng(seed);
    let mut ran = 0;
    let mut nontrivial = 0;
    let mut cubic = 0;
    for i in 0..150 {
        let (x, q, r) = random_case(&mut rng);
        let what = format!("case {i}: input {x:?} {q:?} {r:?}");
        let m = match model(x, q, r) {
            Ok(m) => m,
            Err(e) => panic!("{what}: {e}"),
        };
        let batch = rng.range(1, 3);
        let data = rng.bytes(batch * x.iter().product::<usize>());
        let mut shape = vec![batch];
        shape.extend(x);
        let v = vec![Value::Q { data, shape, q }];
        let cpu = m.run_cpu(&v).unwrap();
        let g = GpuModel::new(&ctx, &m).unwrap();
        let gout = g.run(&ctx, &v).unwrap();
        assert_eq!(gout[0].shape(), cpu[0].shape(), "{what}");
        let (Value::Q { data: gd, .. }, Value::Q { data: cd, .. }) = (&gout[0], &cpu[0]) else {
            panic!("{what}: float output")
        };
        if let Some(mm) = first_mismatch(gd, cd) {
            panic!("seed {seed:#x} {what}: GPU differs from CPU at {mm}");
        }
        if cd.iter().any(|&b| b != cd[0]) {
            nontrivial += 1;
        }
        cubic += matches!(r.mode, ResizeMode::Cubic(_)) as usize;
        ran += 1;
    }
    assert_eq!(ran, 150);
    assert!(cubic >= 20, "only {cubic} cubic cases");
    assert!(
        nontrivial > 100,
        "only {nontrivial} cases with varied outputs"
    );
}

/// The CPU rule on a hand-computed case: uint8 [1, 2] -> [1, 4], half_pixel,
/// x = [10, 21]: source coordinates -0.25 (clamped 0), 0.25, 0.75, 1.25
/// (clamped 1): 10, 12.75 -> 12, 18.25 -> 18, 21 (truncate); requantized
/// with the same qparams (scale 1): rint(12.75) = 13, rint(18.25) = 18.
#[test]
fn cpu_follows_orts_formula() {
    let q = QParams::new(1.0, 0).unwrap();
    let run = |rule| {
        let r = Resize {
            size: [1, 4],
            scales: [1.0, 2.0],
            coord: Coord::HalfPixel,
            rule,
            out: q,
            mode: ResizeMode::Linear,
        };
        let m = model([1, 1, 2], q, r).unwrap();
        let v = vec![Value::Q {
            data: vec![10, 21],
            shape: vec![1, 1, 1, 2],
            q,
        }];
        match &m.run_cpu(&v).unwrap()[0] {
            Value::Q { data, .. } => data.clone(),
            _ => panic!("float output"),
        }
    };
    assert_eq!(run(ResizeRule::Truncate), vec![10, 12, 18, 21]);
    assert_eq!(run(ResizeRule::Requantize), vec![10, 13, 18, 21]);
    // int8 truncates the true value toward zero: -3.25 -> -3, not -4 (the
    // image 124.75 would give 124 = -4)
    let q8 = QParams::new_i8(1.0, 0).unwrap();
    let r = Resize {
        size: [1, 4],
        scales: [1.0, 2.0],
        coord: Coord::HalfPixel,
        rule: ResizeRule::Truncate,
        out: q8,
        mode: ResizeMode::Linear,
    };
    let m = model([1, 1, 2], q8, r).unwrap();
    let v = vec![Value::Q {
        data: vec![(-2i32 + 128) as u8, (-7i32 + 128) as u8],
        shape: vec![1, 1, 1, 2],
        q: q8,
    }];
    let Value::Q { data, .. } = &m.run_cpu(&v).unwrap()[0] else {
        panic!("float output")
    };
    // -2, -3.25 -> -3, -5.75 -> -5, -7
    let want: Vec<u8> = [-2i32, -3, -5, -7]
        .iter()
        .map(|v| (v + 128) as u8)
        .collect();
    assert_eq!(data, &want);
}

#[test]
fn file_round_trip() {
    let q = QParams::new_i8(0.02, -5).unwrap();
    let o = QParams::new_i8(0.05, 3).unwrap();
    let r = Resize {
        size: [7, 3],
        scales: [7.0 / 4.0, 0.75],
        coord: Coord::AlignCorners,
        rule: ResizeRule::Requantize,
        out: o,
        mode: ResizeMode::Linear,
    };
    let m = model([3, 4, 4], q, r).unwrap();
    let bytes = m.to_bytes().unwrap();
    let back = Model::from_bytes(&bytes).unwrap();
    assert_eq!(back.to_bytes().unwrap(), bytes);
    let mut rng = Rng(7);
    let v = vec![Value::Q {
        data: rng.bytes(2 * 48),
        shape: vec![2, 3, 4, 4],
        q,
    }];
    let (a, b) = (m.run_cpu(&v).unwrap(), back.run_cpu(&v).unwrap());
    let (Value::Q { data: a, .. }, Value::Q { data: b, .. }) = (&a[0], &b[0]) else {
        panic!("float output")
    };
    assert_eq!(a, b);
    assert!(a.iter().any(|&x| x != a[0]));
}

#[test]
fn bad_parameters_are_errors() {
    let q = QParams::new(0.1, 3).unwrap();
    let ok = Resize {
        size: [4, 4],
        scales: [2.0, 2.0],
        coord: Coord::HalfPixel,
        rule: ResizeRule::Truncate,
        out: q,
        mode: ResizeMode::Linear,
    };
    assert!(model([2, 2, 2], q, ok).is_ok());
    let err = |r: Resize| {
        model([2, 2, 2], q, r)
            .expect_err("accepted")
            .root_cause()
            .to_string()
    };
    let e = err(Resize { size: [0, 4], ..ok });
    assert!(e.contains("output size [0, 4]"), "{e}");
    let e = err(Resize {
        scales: [0.0, 2.0],
        ..ok
    });
    assert!(e.contains("must be finite and > 0"), "{e}");
    let e = err(Resize {
        scales: [f32::NAN, 2.0],
        ..ok
    });
    assert!(e.contains("must be finite and > 0"), "{e}");
    let e = err(Resize {
        out: QParams::new(0.2, 3).unwrap(),
        ..ok
    });
    assert!(e.contains("keeps the input's qparams"), "{e}");
    let e = err(Resize {
        out: QParams::new_i8(0.1, 3).unwrap(),
        ..ok
    });
    assert!(e.contains("keeps the type"), "{e}");
    let e = err(Resize {
        mode: ResizeMode::Cubic(-0.75),
        ..ok
    });
    assert!(e.contains("mode cubic runs only under rule"), "{e}");
    // a tiny weight: asymmetric with a huge scale puts sources at ~1e-30
    let e = err(Resize {
        scales: [1e30, 2.0],
        coord: Coord::Asymmetric,
        ..ok
    });
    assert!(e.contains("below 2^-40"), "{e}");
    // requantize: input scale out of [2^-40, 2^40]
    let tiny = QParams::new(1e-20, 0).unwrap();
    let e = model(
        [2, 2, 2],
        tiny,
        Resize {
            rule: ResizeRule::Requantize,
            ..ok
        },
    )
    .expect_err("accepted")
    .root_cause()
    .to_string();
    assert!(e.contains("outside [2^-40, 2^40]"), "{e}");
    // the rule is ONNX Runtime's
    let e = Model::new(
        Requant::Fbgemm,
        vec![(
            "x".into(),
            TensorInfo {
                shape: vec![2, 2, 2],
                dtype: DType::QUInt8(q),
            },
        )],
        vec!["r".into()],
        vec![Node {
            name: "r".into(),
            op: Op::Resize(ok),
            inputs: vec!["x".into()],
        }],
    )
    .expect_err("accepted");
    assert!(matches!(e.root_cause(), Error::Config { .. }), "{e}");
    assert!(
        e.to_string().contains("\"r\""),
        "the error names the node: {e}"
    );
}

/// `resize.wgsl`, `ort.wgsl`, `qsoftmax.wgsl` and `inductor.wgsl` are compiled with the one `fdiv` of the
/// float prelude (tested in tests/ort_ops.rs); none has its own.
#[test]
fn fdiv_is_orts() {
    use qfuse::gpu::Kernel;
    let prelude = Kernel::file_source(Kernel::FLOAT_PRELUDE).expect("float prelude");
    assert_eq!(prelude.matches("fn fdiv(").count(), 1);
    for k in [
        Kernel::Resize,
        Kernel::Ort,
        Kernel::QSoftmax,
        Kernel::Inductor,
    ] {
        assert!(k.uses_float_prelude(), "{k:?}");
        assert!(!k.body().contains("fn fdiv("), "{k:?} has its own fdiv");
        let src = k.source();
        assert!(src.starts_with(prelude), "{k:?}");
        assert_eq!(src.matches("fn fdiv(").count(), 1, "{k:?}");
    }
}
