//! Bad input gives a clear error value naming what is wrong, never a panic
//! and never a silent wrong answer.

mod common;

use common::gpu;
use qfuse::layer::LayerKind;
use qfuse::{
    Activation, BatchNorm, Conv2dGeometry, Error, FloatConv2d, GpuLayer, GpuTensor, QLayer,
    QParams, Requant,
};

fn qp() -> QParams {
    QParams::new(0.05, 3).unwrap()
}

fn conv(geom: Conv2dGeometry) -> qfuse::Result<QLayer> {
    let o = geom.out_channels;
    let n = geom.weight_len();
    QLayer::new(
        LayerKind::Conv2d,
        geom,
        vec![1; n],
        vec![0.01; o],
        vec![0.0; o],
        qp(),
        qp(),
        Activation::Relu,
        Requant::Fbgemm,
    )
}

fn err_text<T>(r: qfuse::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn groups_that_do_not_divide_channels() {
    let t = err_text(conv(Conv2dGeometry::new(6, 4, [3, 3]).groups(4)));
    assert!(t.contains("groups 4 must divide in_channels 6"), "{t}");
    let t = err_text(conv(Conv2dGeometry::new(4, 6, [3, 3]).groups(4)));
    assert!(t.contains("out_channels 6"), "{t}");
    let t = err_text(conv(Conv2dGeometry::new(4, 4, [3, 3]).groups(0)));
    assert!(t.contains("groups 0"), "{t}");
}

#[test]
fn zero_kernel_stride_or_dilation() {
    assert!(err_text(conv(Conv2dGeometry::new(4, 4, [0, 3]))).contains("kernel"));
    assert!(err_text(conv(Conv2dGeometry::new(4, 4, [3, 3]).stride([1, 0]))).contains("stride"));
    assert!(
        err_text(conv(Conv2dGeometry::new(4, 4, [3, 3]).dilation([0, 1]))).contains("dilation")
    );
}

#[test]
fn wrong_weight_and_bias_lengths() {
    let g = Conv2dGeometry::new(3, 4, [3, 3]);
    let t = err_text(QLayer::new(
        LayerKind::Conv2d,
        g,
        vec![1; 10],
        vec![0.01; 4],
        vec![0.0; 4],
        qp(),
        qp(),
        Activation::None,
        Requant::Fbgemm,
    ));
    assert!(
        t.contains("weight") && t.contains("has 10 elements, expected 108"),
        "{t}"
    );
    let t = err_text(QLayer::new(
        LayerKind::Conv2d,
        g,
        vec![1; 108],
        vec![0.01; 3],
        vec![0.0; 4],
        qp(),
        qp(),
        Activation::None,
        Requant::Fbgemm,
    ));
    assert!(t.contains("weight scales"), "{t}");
    let t = err_text(QLayer::new(
        LayerKind::Conv2d,
        g,
        vec![1; 108],
        vec![0.01; 4],
        vec![0.0; 5],
        qp(),
        qp(),
        Activation::None,
        Requant::Fbgemm,
    ));
    assert!(t.contains("bias"), "{t}");
}

#[test]
fn bad_qparams() {
    assert!(err_text(QParams::new(f32::NAN, 0)).contains("scale NaN must be finite"));
    assert!(err_text(QParams::new(f32::INFINITY, 0)).contains("must be finite"));
    assert!(err_text(QParams::new(0.0, 0)).contains("> 0"));
    assert!(err_text(QParams::new(-0.1, 0)).contains("> 0"));
    assert!(err_text(QParams::new(0.1, 256)).contains("zero point 256"));
    assert!(err_text(QParams::new(0.1, -1)).contains("zero point -1"));
    // A bad weight scale or bias is caught when the layer is built.
    let g = Conv2dGeometry::new(1, 2, [1, 1]);
    let t = err_text(QLayer::new(
        LayerKind::Conv2d,
        g,
        vec![1; 2],
        vec![0.01, -1.0],
        vec![0.0; 2],
        qp(),
        qp(),
        Activation::None,
        Requant::Fbgemm,
    ));
    assert!(t.contains("weight scale of output channel 1"), "{t}");
    let t = err_text(QLayer::new(
        LayerKind::Conv2d,
        g,
        vec![1; 2],
        vec![0.01; 2],
        vec![0.0, f32::NAN],
        qp(),
        qp(),
        Activation::None,
        Requant::Fbgemm,
    ));
    assert!(t.contains("output channel 1 has bias NaN"), "{t}");
    // Unvalidated qparams smuggled in through the public fields are caught too.
    let bad = QParams {
        scale: 0.1,
        zero_point: 300,
        signed: false,
    };
    let t = err_text(QLayer::new(
        LayerKind::Conv2d,
        g,
        vec![1; 2],
        vec![0.01; 2],
        vec![0.0; 2],
        bad,
        qp(),
        Activation::None,
        Requant::Fbgemm,
    ));
    assert!(t.contains("zero point 300"), "{t}");
}

#[test]
fn nonzero_weight_zero_point_is_unsupported() {
    let g = Conv2dGeometry::linear(2, 2);
    let t = err_text(QLayer::from_pytorch(
        LayerKind::Linear,
        g,
        vec![1; 4],
        vec![0.1; 2],
        &[0, 5],
        vec![0.0; 2],
        qp(),
        qp(),
        Activation::None,
        Requant::Qnnpack,
    ));
    assert!(t.contains("weight zero point 5 on output channel 1"), "{t}");
}

#[test]
fn non_finite_float_weights_and_bad_batchnorm() {
    let g = Conv2dGeometry::new(1, 2, [1, 1]);
    let f = FloatConv2d {
        geometry: g,
        weight: vec![1.0, f32::NAN],
        bias: None,
        batchnorm: None,
        activation: Activation::None,
    };
    assert!(err_text(f.quantize(qp(), qp(), Requant::Fbgemm)).contains("element 1 is NaN"));
    let bn = BatchNorm {
        gamma: vec![1.0; 3],
        beta: vec![0.0; 3],
        running_mean: vec![0.0; 3],
        running_var: vec![1.0; 3],
        eps: 1e-5,
    };
    let f = FloatConv2d {
        geometry: g,
        weight: vec![1.0, 2.0],
        bias: None,
        batchnorm: Some(bn),
        activation: Activation::None,
    };
    assert!(err_text(f.quantize(qp(), qp(), Requant::Fbgemm)).contains("batchnorm"));
}

#[test]
fn input_shapes_that_do_not_fit() {
    let l = conv(Conv2dGeometry::new(3, 4, [3, 3])).unwrap();
    assert!(
        err_text(l.output_shape(&[1, 4, 8, 8])).contains("expected [N >= 1, 3, H >= 1, W >= 1]")
    );
    assert!(err_text(l.output_shape(&[1, 3, 8])).contains("4 dimensions"));
    assert!(err_text(l.output_shape(&[1, 3, 2, 8])).contains("smaller than the dilated 3x3 kernel"));
    assert!(
        err_text(qfuse::cpu::run_layer(&l, &[0u8; 10], &[1, 3, 8, 8]))
            .contains("10 elements for shape")
    );
    let lin = QLayer::new(
        LayerKind::Linear,
        Conv2dGeometry::linear(5, 2),
        vec![1; 10],
        vec![0.1; 2],
        vec![0.0; 2],
        qp(),
        qp(),
        Activation::None,
        Requant::Fbgemm,
    )
    .unwrap();
    assert!(err_text(lin.output_shape(&[2, 4])).contains("expected [N >= 1, 5]"));
}

#[test]
fn gpu_rejects_bad_inputs() {
    let ctx = gpu();
    let l = conv(Conv2dGeometry::new(3, 4, [3, 3])).unwrap();
    let g = GpuLayer::new(&ctx, &l).unwrap();
    // wrong shape
    let x = GpuTensor::upload(&ctx, &[7u8; 2 * 4 * 5 * 5], &[2, 4, 5, 5], qp()).unwrap();
    assert!(err_text(g.run(&ctx, &x)).contains("conv2d input"));
    // data length does not match the shape
    assert!(
        err_text(GpuTensor::upload(&ctx, &[7u8; 10], &[1, 3, 5, 5], qp())).contains("10 elements")
    );
    // input quantized with other qparams than the layer expects
    let x = GpuTensor::upload(
        &ctx,
        &[7u8; 75],
        &[1, 3, 5, 5],
        QParams::new(0.5, 3).unwrap(),
    )
    .unwrap();
    assert!(err_text(g.run(&ctx, &x)).contains("the layer was quantized for"));
    // a tensor beyond the adapter's storage-buffer limit
    let limit = ctx.limits().max_storage_buffer_binding_size as usize;
    match GpuTensor::empty(&ctx, &[1, 4, 1024, limit / 4096 + 1024], qp()) {
        Err(Error::TooLarge {
            needed, limit: l, ..
        }) => assert!(needed > l),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a tensor over the limit was allocated"),
    }
    // zero-sized dimension
    assert!(err_text(GpuTensor::upload(&ctx, &[], &[0, 3, 5, 5], qp())).contains("zero dimension"));
}

#[test]
fn split_k_rejects_bad_configs() {
    use qfuse::gpu::{ConvVariant, SPLITK_MAX_SPLITS};
    let ctx = gpu();
    let l = conv(Conv2dGeometry::new(3, 4, [3, 3])).unwrap();
    let split = |s: u32| ConvVariant::SplitK {
        splits: Some(s),
        tiles: None,
    };
    for s in [0, SPLITK_MAX_SPLITS + 1] {
        assert!(err_text(GpuLayer::with_variant(&ctx, &l, split(s))).contains("splits must be"));
    }
    // grouped layers have no split-K
    let grouped = conv(Conv2dGeometry::new(4, 4, [3, 3]).groups(2)).unwrap();
    assert!(err_text(GpuLayer::with_variant(&ctx, &grouped, split(2))).contains("cannot run"));
    // partial accumulators past what one binding can index: an error, no panic
    let g = GpuLayer::with_variant(&ctx, &l, split(SPLITK_MAX_SPLITS)).unwrap();
    let x = GpuTensor::upload(&ctx, &vec![7u8; 3 * 514 * 514], &[1, 3, 514, 514], qp()).unwrap();
    match g.run(&ctx, &x) {
        Err(Error::TooLarge { needed, limit, .. }) => assert!(needed > limit),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("split-K partials over the limit were allocated"),
    }
}

#[test]
fn plan_sizes_never_wrap() {
    let m = qfuse::bundled::digits_model().unwrap();
    for batch in [usize::MAX, usize::MAX / 4 + 1, 1 << 60] {
        let t = err_text(qfuse::plan::plan(&m, batch));
        assert!(
            t.contains(&format!("batch {batch} makes the activations larger than")),
            "{t}"
        );
    }
    // The largest batch whose sizes fit still plans, with exact sizes.
    let p = qfuse::plan::plan(&m, 1 << 40).unwrap();
    let one = qfuse::plan::plan(&m, 1).unwrap();
    assert_eq!(p.peak_bytes, one.peak_bytes << 40);
    assert!(err_text(qfuse::plan::plan(&m, 0)).contains("must be >= 1"));
}

#[test]
fn bundled_models_by_name() {
    assert!(qfuse::bundled::by_name("digits").is_ok());
    let t = err_text(qfuse::bundled::by_name("nope"));
    assert!(
        t.contains("no bundled model named \"nope\"; the bundled models are: digits"),
        "{t}"
    );
    let m = qfuse::bundled::digits_model().unwrap();
    assert_eq!(m.inputs()[0].1.shape, qfuse::bundled::DIGITS_INPUT_SHAPE);
    let out = m.info(&m.outputs()[0]).unwrap();
    assert_eq!(out.shape, [qfuse::bundled::DIGITS_CLASSES]);
}

#[test]
fn graph_and_input_errors_are_typed_and_name_what_is_wrong() {
    use qfuse::model::{DType, Model, Node, Op, TensorInfo, Value};
    let q = qp();
    let x = (
        "x".to_string(),
        TensorInfo {
            shape: vec![4, 2, 2],
            dtype: DType::QUInt8(q),
        },
    );
    // An add with one input says it takes two, and which node it is.
    let add = Node {
        name: "sum".into(),
        op: Op::Add {
            relu: false,
            out: q,
        },
        inputs: vec!["x".into()],
    };
    let e = Model::new(
        Requant::Fbgemm,
        vec![x.clone()],
        vec!["sum".into()],
        vec![add],
    )
    .unwrap_err();
    let t = e.to_string();
    assert!(
        t.contains("\"sum\"") && t.contains("takes 2 inputs, got 1"),
        "{t}"
    );
    assert!(matches!(e, Error::Node { .. }), "{e:?}");
    assert!(matches!(e.root_cause(), Error::Config { .. }), "{e:?}");
    // A float op on a quantized tensor: a dtype error in that node.
    let deq = Node {
        name: "back".into(),
        op: Op::Quantize(q),
        inputs: vec!["x".into()],
    };
    let e = Model::new(Requant::Fbgemm, vec![x], vec!["back".into()], vec![deq]).unwrap_err();
    assert!(matches!(e.root_cause(), Error::DType { .. }), "{e:?}");
    assert!(e.to_string().contains("\"back\""), "{e}");
    // A non-finite input value is its own variant, naming the element.
    let m = qfuse::bundled::digits_model().unwrap();
    let mut data = vec![0.5; 64];
    data[5] = f32::NAN;
    match m.run_cpu(&[Value::F32 {
        data,
        shape: vec![1, 1, 8, 8],
    }]) {
        Err(e @ Error::NonFinite { index: 5, .. }) => {
            assert!(e.to_string().contains("element 5 is NaN"), "{e}")
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    // quint8 data for a float32 model input.
    match m.run_cpu(&[Value::Q {
        data: vec![0; 64],
        shape: vec![1, 1, 8, 8],
        q,
    }]) {
        Err(Error::DType { .. }) => {}
        other => panic!("expected DType, got {other:?}"),
    }
}

#[test]
fn loading_a_bundled_name_or_an_onnx_file_says_what_it_is() {
    // A bundled model's name is not a path: the error says how to load it.
    for name in ["digits", "bundled:digits"] {
        let e = qfuse::Model::load(name).unwrap_err();
        let t = e.to_string();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert!(
            t.contains("names a bundled model")
                && t.contains("qfuse::bundled::by_name(\"digits\")"),
            "{t}"
        );
    }
    // Any other missing file is a plain I/O error.
    let t = qfuse::Model::load("no-such-model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(!t.contains("bundled"), "{t}");
    // An ONNX file is recognised as one (by content too), not reported as a
    // corrupt safetensors file, and loads.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/onnx/ops/qlinearconv_u8_big_acc_w7");
    let onnx = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "onnx"))
        .expect("an .onnx file");
    let m = qfuse::Model::load(&onnx).unwrap();
    assert_eq!(m.engine(), qfuse::Requant::OnnxRuntime);
    let tmp = std::env::temp_dir().join(format!("qfuse-onnx-sniff-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let bytes = std::fs::read(&onnx).unwrap();
    let renamed = tmp.join("model.bin");
    std::fs::write(&renamed, &bytes).unwrap();
    assert_eq!(
        qfuse::Model::load(&renamed).unwrap().engine(),
        qfuse::Requant::OnnxRuntime
    );
    // A truncated .onnx file: an ONNX error naming the problem, in the file.
    let cut = tmp.join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = qfuse::Model::load(&cut).unwrap_err();
    assert!(matches!(e.root_cause(), Error::Onnx { .. }), "{e:?}");
    assert!(e.to_string().contains("cut.onnx"), "{e}");
    std::fs::remove_dir_all(&tmp).ok();
}
