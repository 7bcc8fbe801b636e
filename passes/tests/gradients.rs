//! Every gradient rule against central finite differences in f64 on random inputs, and the
//! reverse-mode executor against finite differences of the whole graph.

use pqc::interp::kernels::{self, AttnShape};
use pqc::interp::{grad, vjp, Value};
use pqc::ir::parse;
use pqc::tensor::Tensor;

/// Deterministic values in [-1, 1).
fn random(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = paretoqc_runtime::testgen::Lcg(seed);
    (0..n).map(|_| rng.f64()).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Checks `analytic` = d⟨dy, f(x)⟩/dx by central differences, for every coordinate of x.
fn check(what: &str, x: &[f64], dy: &[f64], f: impl Fn(&[f64]) -> Vec<f64>, analytic: &[f64]) {
    let h = 1e-6;
    assert_eq!(analytic.len(), x.len(), "{what}: gradient length");
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
        xp[i] += h;
        xm[i] -= h;
        let numeric = (dot(dy, &f(&xp)) - dot(dy, &f(&xm))) / (2.0 * h);
        let err = (numeric - analytic[i]).abs();
        assert!(
            err <= 1e-6 * (1.0 + numeric.abs()),
            "{what}[{i}]: analytic {} numeric {numeric}",
            analytic[i]
        );
    }
}

#[test]
fn embedding_rule() {
    let (vocab, h, ids) = (5, 3, vec![1, 4, 1, 0]);
    let table = random(vocab * h, 1);
    let dy = random(ids.len() * h, 2);
    let f = |t: &[f64]| {
        ids.iter()
            .flat_map(|&i| t[i as usize * h..(i as usize + 1) * h].to_vec())
            .collect()
    };
    check(
        "embedding",
        &table,
        &dy,
        f,
        &vjp::embedding(&dy, &ids, vocab, h),
    );
}

#[test]
fn rms_norm_rule() {
    let (rows, h, eps) = (3, 6, 1e-5);
    let (x, w, dy) = (random(rows * h, 3), random(h, 4), random(rows * h, 5));
    let (dx, dw) = vjp::rms_norm(&dy, &x, &w, eps);
    check(
        "rms_norm dx",
        &x,
        &dy,
        |x| kernels::rms_norm(x, &w, eps),
        &dx,
    );
    check(
        "rms_norm dw",
        &w,
        &dy,
        |w| kernels::rms_norm(&x, w, eps),
        &dw,
    );
}

#[test]
fn linear_rule() {
    let (rows, k, n) = (3, 5, 4);
    let (x, w, dy) = (random(rows * k, 6), random(n * k, 7), random(rows * n, 8));
    let (dx, dw) = vjp::linear(&dy, &x, &w, rows, k, n);
    check(
        "linear dx",
        &x,
        &dy,
        |x| kernels::linear(x, &w, rows, k, n),
        &dx,
    );
    check(
        "linear dw",
        &w,
        &dy,
        |w| kernels::linear(&x, w, rows, k, n),
        &dw,
    );
}

#[test]
fn rope_rule() {
    // One sequence of 6 rows, and two packed sequences of 3.
    for seq in [6, 3] {
        let (rows, width, d, theta) = (6, 8, 4, 10000.0);
        let (x, dy) = (random(rows * width, 9), random(rows * width, 10));
        check(
            "rope",
            &x,
            &dy,
            |x| kernels::rope(x, width, d, theta, false, seq),
            &vjp::rope(&dy, width, d, theta, seq),
        );
    }
}

/// Packed attention: two sequences of 4 rows, each attending only within itself, and its rule.
#[test]
fn packed_attention_rule() {
    let s = AttnShape {
        rows: 4,
        heads: 4,
        kv_heads: 2,
        head_dim: 3,
    };
    let q = random(2 * s.rows * s.q_width(), 21);
    let k = random(2 * s.rows * s.kv_width(), 22);
    let v = random(2 * s.rows * s.kv_width(), 23);
    let dy = random(2 * s.rows * s.q_width(), 24);
    // Each half equals the attention of that sequence alone.
    let both = kernels::attention_packed(&q, &k, &v, s);
    let (qh, kh) = (s.rows * s.q_width(), s.rows * s.kv_width());
    let second = kernels::attention(&q[qh..], &k[kh..], &v[kh..], s);
    assert_eq!(&both[qh..], &second[..]);
    let (dq, dk, dv) = vjp::attention_packed(&dy, &q, &k, &v, s);
    check(
        "packed dq",
        &q,
        &dy,
        |q| kernels::attention_packed(q, &k, &v, s),
        &dq,
    );
    check(
        "packed dk",
        &k,
        &dy,
        |k| kernels::attention_packed(&q, k, &v, s),
        &dk,
    );
    check(
        "packed dv",
        &v,
        &dy,
        |v| kernels::attention_packed(&q, &k, v, s),
        &dv,
    );
}

#[test]
fn attention_rule() {
    let s = AttnShape {
        rows: 5,
        heads: 4,
        kv_heads: 2,
        head_dim: 3,
    };
    let q = random(s.rows * s.q_width(), 11);
    let k = random(s.rows * s.kv_width(), 12);
    let v = random(s.rows * s.kv_width(), 13);
    let dy = random(s.rows * s.q_width(), 14);
    let (dq, dk, dv) = vjp::attention(&dy, &q, &k, &v, s);
    check(
        "attention dq",
        &q,
        &dy,
        |q| kernels::attention(q, &k, &v, s),
        &dq,
    );
    check(
        "attention dk",
        &k,
        &dy,
        |k| kernels::attention(&q, k, &v, s),
        &dk,
    );
    check(
        "attention dv",
        &v,
        &dy,
        |v| kernels::attention(&q, &k, v, s),
        &dv,
    );
}

#[test]
fn elementwise_rules() {
    let (x, y, dy) = (random(12, 15), random(12, 16), random(12, 17));
    check("silu", &x, &dy, kernels::silu, &vjp::silu(&dy, &x));
    check(
        "mul a",
        &x,
        &dy,
        |x| kernels::mul(x, &y),
        &kernels::mul(&dy, &y),
    );
    check(
        "mul b",
        &y,
        &dy,
        |y| kernels::mul(&x, y),
        &kernels::mul(&dy, &x),
    );
    check("add", &x, &dy, |x| kernels::add(x, &y), &dy);
}

#[test]
fn log_softmax_and_cross_entropy_rules() {
    let (rows, n) = (3, 7);
    let (x, dy) = (random(rows * n, 18), random(rows * n, 19));
    let y = kernels::log_softmax(&x, n);
    check(
        "log_softmax",
        &x,
        &dy,
        |x| kernels::log_softmax(x, n),
        &vjp::log_softmax(&dy, &y, n),
    );
    let targets = vec![2, 0, 6];
    let nll_mean =
        |lp: &[f64]| vec![kernels::nll(lp, n, &targets).iter().sum::<f64>() / rows as f64];
    check(
        "cross_entropy",
        &y,
        &[1.5],
        nll_mean,
        &vjp::cross_entropy(1.5, &targets, n),
    );
}

const TINY: &str = "
graph @tiny(%tokens: i32[T], %targets: i32[T]) -> (f32[]) {
  %0 = param @model.embed_tokens.weight : f32[11,8]
  %1 = embedding %0, %tokens : f32[T,8]
  %2 = param @model.norm.weight : f32[8]
  %3 = rms_norm %1, %2 {eps = 1e-5} : f32[T,8]
  %4 = param @q.weight : f32[8,8]
  %5 = linear %3, %4 : f32[T,8]
  %6 = rope %5 {head_dim = 4, theta = 10000.0} : f32[T,8]
  %7 = param @k.weight : f32[4,8]
  %8 = linear %3, %7 : f32[T,4]
  %9 = rope %8 {head_dim = 4, theta = 10000.0} : f32[T,4]
  %10 = attention %6, %9, %8 {head_dim = 4, heads = 2, kv_heads = 1} : f32[T,8]
  %11 = silu %10 : f32[T,8]
  %12 = mul %11, %3 : f32[T,8]
  %13 = add %12, %1 : f32[T,8]
  %14 = linear %13, %0 : f32[T,11]
  %15 = log_softmax %14 : f32[T,11]
  %16 = cross_entropy %15, %targets : f32[]
  return %16
}";

/// The executor (forward with kept values, rules in reverse, accumulation at shared and tied
/// nodes) against finite differences of the whole f32 graph, in f64 arithmetic on the outputs.
#[test]
fn whole_graph_gradient() {
    let g = parse(TINY).unwrap();
    pqc::ir::verify(&g, pqc::ir::Stage::Model).unwrap();
    let mut weights = pqc::import::Weights::new();
    for (i, (name, id)) in g.params().enumerate() {
        let shape = g.node(id).ty.fixed_dims().unwrap();
        let n = shape.iter().product();
        let data = random(n, 100 + i as u64)
            .iter()
            .map(|v| *v as f32 * 0.5)
            .collect();
        weights.insert(name.to_string(), Tensor::new(shape, data));
    }
    let inputs = || {
        vec![
            Value::ids(vec![1, 5, 3, 10, 0]),
            Value::ids(vec![5, 3, 10, 0, 2]),
        ]
    };
    let loss = |w: &pqc::import::Weights| {
        pqc::interp::run(&g, w, inputs()).unwrap()[0]
            .clone()
            .into_f32()
            .unwrap()
            .data[0] as f64
    };
    let r = grad::value_and_grad(&g, &weights, inputs(), &|_| true).unwrap();
    assert!(r.peak_bytes > 0);
    for (name, gw) in &r.grads {
        for i in (0..gw.numel()).step_by(3) {
            let h = 1e-2f32;
            let mut wp = weights.clone();
            wp.get_mut(name).unwrap().data[i] += h;
            let mut wm = weights.clone();
            wm.get_mut(name).unwrap().data[i] -= h;
            let numeric = (loss(&wp) - loss(&wm)) / (2.0 * h as f64);
            let analytic = gw.data[i] as f64;
            assert!(
                (numeric - analytic).abs() <= 2e-3 * (1.0 + numeric.abs()),
                "{name}[{i}]: analytic {analytic} numeric {numeric}"
            );
        }
    }
    assert_eq!(r.grads.len(), 4, "every weight gets a gradient");
}

/// The distillation loss (KL to the teacher mixed with cross-entropy) and its rule, through
/// log_softmax, at three mixes; and mse's rule for both operands.
#[test]
fn distill_and_mse_rules() {
    let (rows, n) = (3, 7);
    let (x, t) = (random(rows * n, 31), random(rows * n, 32));
    let teacher = kernels::log_softmax(&t, n);
    let targets = vec![4, 0, 6];
    for ce in [0.0, 0.3, 1.0] {
        let loss = |x: &[f64]| {
            let logp = kernels::log_softmax(x, n);
            vec![kernels::distill(&logp, &teacher, &targets, n, ce)]
        };
        let logp = kernels::log_softmax(&x, n);
        let dlogp = vjp::distill(0.7, &teacher, &targets, n, ce);
        let dx = vjp::log_softmax(&dlogp, &logp, n);
        check(&format!("distill ce={ce}"), &x, &[0.7], loss, &dx);
    }
    // KL of a distribution to itself is zero, and positive otherwise.
    assert!(kernels::distill(&teacher, &teacher, &targets, n, 0.0).abs() < 1e-12);
    assert!(kernels::distill(&kernels::log_softmax(&x, n), &teacher, &targets, n, 0.0) > 0.0);

    let (y, w) = (random(12, 33), random(4, 34));
    let (dx, dy) = vjp::mse(1.3, &x[..12], &y, &w);
    check(
        "mse x",
        &x[..12],
        &[1.3],
        |a| vec![kernels::mse(a, &y, &w)],
        &dx,
    );
    check(
        "mse y",
        &y,
        &[1.3],
        |b| vec![kernels::mse(&x[..12], b, &w)],
        &dy,
    );
}

/// A packed run of two sequences equals the two sequences run alone: the loss is their mean and
/// the gradients their mean (each sequence's positions and causal window restart).
#[test]
fn packed_batch_equals_separate_runs() {
    let g = parse(TINY).unwrap();
    let mut weights = pqc::import::Weights::new();
    for (i, (name, id)) in g.params().enumerate() {
        let shape = g.node(id).ty.fixed_dims().unwrap();
        let data = random(shape.iter().product(), 200 + i as u64)
            .iter()
            .map(|v| *v as f32 * 0.5)
            .collect();
        weights.insert(name.to_string(), Tensor::new(shape, data));
    }
    let a = (vec![1, 5, 3, 10], vec![5, 3, 10, 0]);
    let b = (vec![7, 2, 2, 9], vec![2, 2, 9, 4]);
    let one = |s: &(Vec<i32>, Vec<i32>)| {
        grad::value_and_grad(
            &g,
            &weights,
            vec![Value::ids(s.0.clone()), Value::ids(s.1.clone())],
            &|_| true,
        )
        .unwrap()
    };
    let (ra, rb) = (one(&a), one(&b));
    let packed = grad::value_and_grad_packed(
        &g,
        &weights,
        vec![
            Value::ids([a.0.clone(), b.0.clone()].concat()),
            Value::ids([a.1.clone(), b.1.clone()].concat()),
        ],
        &|_| true,
        pqc::interp::Packing::sequences(4),
    )
    .unwrap();
    let value = |r: &grad::GradResult| r.outputs[0].clone().into_f32().unwrap().data[0];
    let mean = (value(&ra) + value(&rb)) / 2.0;
    assert!((value(&packed) - mean).abs() <= 1e-6 * (1.0 + mean.abs()));
    for (name, gp) in &packed.grads {
        for (i, &v) in gp.data.iter().enumerate() {
            let want = (ra.grads[name].data[i] + rb.grads[name].data[i]) / 2.0;
            assert!(
                (v - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{name}[{i}]: packed {v} separate {want}"
            );
        }
    }
    // A row count that is not a whole number of sequences is refused.
    let err = grad::value_and_grad_packed(
        &g,
        &weights,
        vec![Value::ids(a.0.clone()), Value::ids(a.1.clone())],
        &|_| true,
        pqc::interp::Packing::sequences(3),
    );
    assert!(err.is_err());
}
