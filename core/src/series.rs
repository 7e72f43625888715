//! The model type every layer shares: one time series as Prometheus answers it and
//! as a partition holds it (the client decodes into it, the partition builder and
//! the tests build from it). Below every other module: it imports none.

use std::collections::BTreeMap;

/// One time series: its labels and its points `(epoch ms, value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(i64, f64)>,
}
