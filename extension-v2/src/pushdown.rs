//! `WHERE` on `date`, `api_proxy` and `metric_name` → what the named parameters
//! would select. DuckDB 2.0 offers a table function the predicates of a query
//! (C API v2 filter pushdown) before any file is opened; each one is read into an
//! [`Expr`] and narrows [`Pushed`]: a day range, a set of proxies, a set of
//! metrics, which prune days, proxies, files and row groups exactly as `date_range`,
//! `proxy` and `metric` do. A predicate is accepted (DuckDB stops applying it) only
//! when that pruning is exactly the predicate; any other predicate still prunes
//! what it safely can and DuckDB applies it as before.

use chrono::{Days, NaiveDate};
use promduck_core::reader::Column;

/// A predicate as far as promduck reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A declared column (an index into `Column::ALL`, then `source`, labels).
    Col(usize),
    Const(Lit),
    Cmp(Op, Box<Expr>, Box<Expr>),
    /// `x IN (a, b, …)`.
    In(Box<Expr>, Vec<Expr>),
    /// `x BETWEEN lo AND hi`.
    Between(Box<Expr>, Box<Expr>, Box<Expr>),
    And(Vec<Expr>),
    /// Anything else (`OR`, functions, casts, …): never accepted.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    /// `c op x` ⇔ `x flipped c`.
    fn flipped(self) -> Op {
        match self {
            Op::Eq => Op::Eq,
            Op::Lt => Op::Gt,
            Op::Le => Op::Ge,
            Op::Gt => Op::Lt,
            Op::Ge => Op::Le,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Null,
    Date(NaiveDate),
    Text(String),
    /// A constant of another type (DuckDB casts the column then, so this never
    /// meets a bare column in practice).
    Other,
}

/// What the accepted and the merely pruning predicates select, intersected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pushed {
    /// Inclusive day bounds.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// `None`: every proxy.
    pub proxies: Option<Vec<String>>,
    /// `None`: every metric.
    pub metrics: Option<Vec<String>>,
}

fn column(i: usize) -> Option<Column> {
    Column::ALL.get(i).copied()
}

/// `a ∩ b`, `None` being everything; the order of `a` is kept.
pub fn intersect(a: Option<Vec<String>>, b: Option<Vec<String>>) -> Option<Vec<String>> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => Some(a.into_iter().filter(|x| b.contains(x)).collect()),
    }
}

impl Pushed {
    /// Narrows the selection by `e`; true when the selection now does exactly what
    /// `e` does (so DuckDB may stop applying it).
    pub fn constrain(&mut self, e: &Expr) -> bool {
        match e {
            Expr::And(children) => {
                let mut exact = true;
                for c in children {
                    exact &= self.constrain(c);
                }
                exact
            }
            Expr::Cmp(op, a, b) => match (a.as_ref(), b.as_ref()) {
                (Expr::Col(c), Expr::Const(v)) => self.compare(*c, *op, v),
                (Expr::Const(v), Expr::Col(c)) => self.compare(*c, op.flipped(), v),
                _ => false,
            },
            Expr::Between(x, lo, hi) => {
                // C API v2 (DuckDB 2.0.1) does not say whether a BETWEEN's bounds are
                // inclusive, and the optimizer turns `d >= a AND d < b` into a BETWEEN
                // with an exclusive upper bound: prune to the inclusive span, never accept.
                if let (Expr::Col(c), Expr::Const(lo), Expr::Const(hi)) =
                    (x.as_ref(), lo.as_ref(), hi.as_ref())
                {
                    self.compare(*c, Op::Ge, lo);
                    self.compare(*c, Op::Le, hi);
                }
                false
            }
            Expr::In(x, items) => {
                let Expr::Col(c) = x.as_ref() else {
                    return false;
                };
                let mut lits = Vec::with_capacity(items.len());
                for i in items {
                    match i {
                        // A NULL candidate matches no row: it changes nothing.
                        Expr::Const(Lit::Null) => {}
                        Expr::Const(l) => lits.push(l),
                        _ => return false,
                    }
                }
                self.one_of(*c, &lits)
            }
            Expr::Col(_) | Expr::Const(_) | Expr::Other => false,
        }
    }

    fn compare(&mut self, c: usize, op: Op, v: &Lit) -> bool {
        match (column(c), v) {
            (Some(Column::Date), Lit::Date(d)) => {
                let (from, to) = match op {
                    Op::Eq => (Some(*d), Some(*d)),
                    Op::Ge => (Some(*d), None),
                    Op::Le => (None, Some(*d)),
                    // A bound past the calendar's end selects no day at all.
                    Op::Gt => (
                        Some(d.checked_add_days(Days::new(1)).unwrap_or(NaiveDate::MAX)),
                        None,
                    ),
                    Op::Lt => (
                        None,
                        Some(d.checked_sub_days(Days::new(1)).unwrap_or(NaiveDate::MIN)),
                    ),
                };
                let gt_max = op == Op::Gt && *d == NaiveDate::MAX;
                let lt_min = op == Op::Lt && *d == NaiveDate::MIN;
                if gt_max || lt_min {
                    // Nothing is selected; an empty proxy set says so.
                    self.proxies = Some(Vec::new());
                    return true;
                }
                if let Some(f) = from {
                    self.from = Some(self.from.map_or(f, |x| x.max(f)));
                }
                if let Some(t) = to {
                    self.to = Some(self.to.map_or(t, |x| x.min(t)));
                }
                true
            }
            (Some(Column::Proxy), Lit::Text(s)) if op == Op::Eq => {
                self.proxies = intersect(self.proxies.take(), Some(vec![s.clone()]));
                true
            }
            (Some(Column::Metric), Lit::Text(s)) if op == Op::Eq => {
                self.metrics = intersect(self.metrics.take(), Some(vec![s.clone()]));
                true
            }
            _ => false,
        }
    }

    fn one_of(&mut self, c: usize, lits: &[&Lit]) -> bool {
        let texts = || -> Option<Vec<String>> {
            lits.iter()
                .map(|l| match l {
                    Lit::Text(s) => Some(s.clone()),
                    _ => None,
                })
                .collect()
        };
        match column(c) {
            Some(Column::Proxy) => match texts() {
                Some(t) => {
                    self.proxies = intersect(self.proxies.take(), Some(t));
                    true
                }
                None => false,
            },
            Some(Column::Metric) => match texts() {
                Some(t) => {
                    self.metrics = intersect(self.metrics.take(), Some(t));
                    true
                }
                None => false,
            },
            Some(Column::Date) => {
                // Days are a range here: prune to the list's span, and let DuckDB
                // drop the days in between.
                let days: Option<Vec<NaiveDate>> = lits
                    .iter()
                    .map(|l| match l {
                        Lit::Date(d) => Some(*d),
                        _ => None,
                    })
                    .collect();
                let Some(days) = days else {
                    return false;
                };
                match (days.iter().min(), days.iter().max()) {
                    (Some(&lo), Some(&hi)) => {
                        self.from = Some(self.from.map_or(lo, |x| x.max(lo)));
                        self.to = Some(self.to.map_or(hi, |x| x.min(hi)));
                        lo == hi
                    }
                    // Only NULLs: no row matches.
                    _ => {
                        self.proxies = Some(Vec::new());
                        true
                    }
                }
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }
    fn col(c: Column) -> Box<Expr> {
        Box::new(Expr::Col(Column::ALL.iter().position(|&x| x == c).unwrap()))
    }
    fn date(s: &str) -> Box<Expr> {
        Box::new(Expr::Const(Lit::Date(d(s))))
    }
    fn text(s: &str) -> Expr {
        Expr::Const(Lit::Text(s.into()))
    }

    #[test]
    fn date_comparisons_become_an_inclusive_range() {
        let mut p = Pushed::default();
        assert!(p.constrain(&Expr::Cmp(Op::Gt, col(Column::Date), date("2024-03-01"))));
        assert!(p.constrain(&Expr::Cmp(Op::Ge, date("2024-03-10"), col(Column::Date))));
        assert_eq!(
            (p.from, p.to),
            (Some(d("2024-03-02")), Some(d("2024-03-10")))
        );
        // A BETWEEN prunes to its inclusive span but is never accepted (DuckDB keeps its
        // FILTER): C API v2 does not say whether its bounds are inclusive.
        assert!(!p.constrain(&Expr::Between(
            col(Column::Date),
            date("2024-03-05"),
            date("2024-03-20")
        )));
        assert_eq!(
            (p.from, p.to),
            (Some(d("2024-03-05")), Some(d("2024-03-10")))
        );
    }

    #[test]
    fn proxy_and_metric_sets_intersect() {
        let mut p = Pushed::default();
        assert!(p.constrain(&Expr::In(
            col(Column::Proxy),
            vec![text("a"), text("b"), Expr::Const(Lit::Null)]
        )));
        assert!(p.constrain(&Expr::Cmp(Op::Eq, col(Column::Proxy), Box::new(text("b")))));
        assert_eq!(p.proxies, Some(vec!["b".to_string()]));
        assert!(p.constrain(&Expr::Cmp(Op::Eq, col(Column::Metric), Box::new(text("m")))));
        assert!(p.constrain(&Expr::Cmp(Op::Eq, col(Column::Metric), Box::new(text("n")))));
        assert_eq!(p.metrics, Some(vec![]));
    }

    #[test]
    fn what_cannot_be_exact_prunes_but_is_not_accepted() {
        let mut p = Pushed::default();
        // Days in a list: pruned to their span, DuckDB keeps the filter.
        assert!(!p.constrain(&Expr::In(
            col(Column::Date),
            vec![*date("2024-03-01"), *date("2024-03-09")]
        )));
        assert_eq!(
            (p.from, p.to),
            (Some(d("2024-03-01")), Some(d("2024-03-09")))
        );
        assert!(!p.constrain(&Expr::Cmp(Op::Lt, col(Column::Proxy), Box::new(text("m")))));
        assert!(!p.constrain(&Expr::Cmp(Op::Eq, col(Column::Value), Box::new(text("1")))));
        assert!(!p.constrain(&Expr::Other));
        // An AND with one inexact part is not accepted, but its exact part prunes.
        assert!(!p.constrain(&Expr::And(vec![
            Expr::Cmp(Op::Eq, col(Column::Proxy), Box::new(text("a"))),
            Expr::Other
        ])));
        assert_eq!(p.proxies, Some(vec!["a".to_string()]));
    }
}
