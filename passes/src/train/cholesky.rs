//! The inverse Cholesky factor that GPTQ (`super::gptq`) spreads each column's rounding error
//! with: the upper-triangular U with `H⁻¹ = Uᵀ·U`, in f64.

use rayon::prelude::*;

/// The upper-triangular U with `H⁻¹ = Uᵀ·U` of a symmetric positive definite `h` `[n, n]`:
/// with H reversed (J·H·J = L·Lᵀ, L lower), H = R·Rᵀ for the upper R = J·L·J, so U = R⁻¹.
pub fn inverse_upper_cholesky(h: &[f64], n: usize) -> Result<Vec<f64>, String> {
    // Lower Cholesky factor of the reversed matrix.
    let rev = |i: usize, j: usize| h[(n - 1 - i) * n + (n - 1 - j)];
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let dot: f64 = dot(&l[i * n..i * n + j], &l[j * n..j * n + j]);
            let v = rev(i, j) - dot;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return Err(format!(
                        "the calibration Gram matrix is not positive definite at column {}",
                        n - 1 - i
                    ));
                }
                l[i * n + i] = v.sqrt();
            } else {
                l[i * n + j] = v / l[j * n + j];
            }
        }
    }
    // L⁻¹ (lower), one column at a time by forward substitution, columns in parallel.
    let cols: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|c| {
            let mut x = vec![0.0f64; n];
            x[c] = 1.0 / l[c * n + c];
            for i in c + 1..n {
                let s = dot(&l[i * n + c..i * n + i], &x[c..i]);
                x[i] = -s / l[i * n + i];
            }
            x
        })
        .collect();
    // U = J·L⁻¹·J: U[i][j] = L⁻¹[n-1-i][n-1-j].
    let mut u = vec![0.0f64; n * n];
    for (c, x) in cols.iter().enumerate() {
        for (i, &v) in x.iter().enumerate() {
            u[(n - 1 - i) * n + (n - 1 - c)] = v;
        }
    }
    Ok(u)
}

/// Σ a·b with four partial sums (so that it vectorizes).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut s = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            s[k] += x[k] * y[k];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (s[0] + s[1]) + (s[2] + s[3]) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// U of a small matrix satisfies Uᵀ·U·H = I.
    #[test]
    fn inverse_upper_cholesky_inverts() {
        let n = 5;
        let mut h = vec![0.0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] =
                    1.0 / (1.0 + (i as f64 - j as f64).abs()) + if i == j { n as f64 } else { 0.0 };
            }
        }
        let u = inverse_upper_cholesky(&h, n).unwrap();
        for i in 0..n {
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0, "U is upper");
            }
        }
        for i in 0..n {
            for j in 0..n {
                let mut v = 0.0;
                for a in 0..n {
                    let uut: f64 = (0..n).map(|k| u[k * n + i] * u[k * n + a]).sum();
                    v += uut * h[a * n + j];
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-12, "({i},{j}) = {v}");
            }
        }
    }
}
