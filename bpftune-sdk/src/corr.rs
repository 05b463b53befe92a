//! Pearson correlation over streaming samples, used to notice that latency
//! rises with buffer sizes (and similar push-pull checks).
//!
//! Threshold: 0.75 with at least 10 samples, as the original's code uses (its
//! README says 0.7; we follow the code and document it).

use std::collections::HashMap;
use std::hash::Hash;

/// Correlation above this counts as "correlated".
pub const CORR_THRESHOLD: f64 = 0.75;
/// Fewer samples than this give a correlation of 0.
pub const CORR_MIN_SAMPLES: u64 = 10;

/// Running sums for one (x, y) series; f64 so large products cannot overflow.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Corr {
    n: u64,
    sum_x: f64,
    sum_y: f64,
    sum_xx: f64,
    sum_yy: f64,
    sum_xy: f64,
}

impl Corr {
    pub fn update(&mut self, x: f64, y: f64) {
        self.n += 1;
        self.sum_x += x;
        self.sum_y += y;
        self.sum_xx += x * x;
        self.sum_yy += y * y;
        self.sum_xy += x * y;
    }

    pub fn samples(&self) -> u64 {
        self.n
    }

    /// Pearson r, or 0 with too few samples or no variance.
    pub fn compute(&self) -> f64 {
        if self.n < CORR_MIN_SAMPLES {
            return 0.0;
        }
        let n = self.n as f64;
        let cov = (self.sum_xy - self.sum_x * self.sum_y / n) / (n - 1.0);
        let var_x = (self.sum_xx - self.sum_x * self.sum_x / n) / (n - 1.0);
        let var_y = (self.sum_yy - self.sum_y * self.sum_y / n) / (n - 1.0);
        if var_x <= 0.0 || var_y <= 0.0 {
            return 0.0;
        }
        (cov / (var_x.sqrt() * var_y.sqrt())).clamp(-1.0, 1.0)
    }

    /// Enough samples and above [`CORR_THRESHOLD`].
    pub fn is_correlated(&self) -> bool {
        self.compute() > CORR_THRESHOLD
    }
}

/// Correlations keyed by anything (e.g. tunable × netns cookie), owned by
/// one tuner, so keys cannot collide across tuners.
#[derive(Debug, Clone, Default)]
pub struct CorrTable<K: Eq + Hash> {
    series: HashMap<K, Corr>,
}

impl<K: Eq + Hash> CorrTable<K> {
    pub fn new() -> Self {
        Self { series: HashMap::new() }
    }
    pub fn update(&mut self, key: K, x: f64, y: f64) {
        self.series.entry(key).or_default().update(x, y);
    }
    pub fn get(&self, key: &K) -> Corr {
        self.series.get(key).copied().unwrap_or_default()
    }
    /// Forget every series matching `pred` (e.g. a namespace that died).
    pub fn retain(&mut self, pred: impl FnMut(&K, &mut Corr) -> bool) {
        self.series.retain(pred);
    }
    pub fn len(&self) -> usize {
        self.series.len()
    }
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_samples_is_zero() {
        let mut c = Corr::default();
        for i in 0..9 {
            c.update(i as f64, i as f64);
        }
        assert_eq!(c.compute(), 0.0);
        c.update(9.0, 9.0);
        assert!((c.compute() - 1.0).abs() < 1e-9);
        assert!(c.is_correlated());
    }

    #[test]
    fn anti_and_uncorrelated() {
        let mut anti = Corr::default();
        let mut flat = Corr::default();
        for i in 0..20 {
            anti.update(i as f64, -(i as f64));
            flat.update(i as f64, 5.0);
        }
        assert!((anti.compute() + 1.0).abs() < 1e-9);
        assert_eq!(flat.compute(), 0.0);
        assert!(!anti.is_correlated());
    }

    #[test]
    fn large_values_do_not_overflow() {
        let mut c = Corr::default();
        for i in 0..100u64 {
            let x = (i as f64) * 1e12;
            c.update(x, x * 2.0 + 3.0);
        }
        assert!((c.compute() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn table_keys_are_independent() {
        let mut t: CorrTable<(u32, u64)> = CorrTable::new();
        for i in 0..12 {
            t.update((0, 1), i as f64, i as f64);
            t.update((0, 2), i as f64, (12 - i) as f64);
        }
        assert!(t.get(&(0, 1)).is_correlated());
        assert!(!t.get(&(0, 2)).is_correlated());
        t.retain(|k, _| k.1 != 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&(0, 1)).samples(), 0);
    }
}
