//! Reading Prometheus' text exposition format (what `GET /metrics` answers), for the readers of
//! the server's metrics: the live view and `firstcome-rehearse --scrape-metrics`. Only what the
//! server writes is understood: `name{label="value",...} number` lines; comments are skipped.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Every sample in `text`; lines that do not parse are skipped (the format allows timestamps and
/// more escapes than the server ever writes).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(line).collect()
}

fn line(l: &str) -> Option<Sample> {
    let (head, value) = match l.find('{') {
        Some(_) => {
            let close = l.rfind('}')?;
            (&l[..=close], l[close + 1..].trim())
        }
        None => l.split_once(' ').map(|(h, v)| (h, v.trim()))?,
    };
    let value = value.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match head.split_once('{') {
        Some((name, rest)) => (name, labels(rest.strip_suffix('}')?)?),
        None => (head, Vec::new()),
    };
    Some(Sample { name: name.to_owned(), labels, value })
}

fn labels(mut s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        out.push((key.trim().to_owned(), value));
        s = rest[end + 1..].trim_start_matches(',').trim_start();
    }
    Some(out)
}

/// The `q` quantile (0..1) of the observations between two readings of one histogram's
/// cumulative buckets (`(le, count)`, ascending), interpolated linearly within the bucket it
/// falls in, as Prometheus' `histogram_quantile` does. None when nothing was observed.
pub fn quantile_between(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> =
        after.iter().map(|&(le, n)| (le, n - before.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, m)| *m))).collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, n) in &delta {
        if n >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let within = if n > lower.1 { (rank - lower.1) / (n - lower.1) } else { 1.0 };
            return Some(lower.0 + (le - lower.0) * within);
        }
        lower = (le, n);
    }
    Some(lower.0)
}

/// The `q` quantile of observations counted per bucket (`counts[i]` below `bounds[i]`, one more
/// count past the last bound), interpolated within its bucket. None when nothing was counted.
pub fn quantile_of_counts(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let mut cumulative = Vec::with_capacity(counts.len());
    let mut sum = 0.0;
    for (i, n) in counts.iter().enumerate() {
        sum += *n as f64;
        cumulative.push((bounds.get(i).copied().unwrap_or(f64::INFINITY), sum));
    }
    let zero: Vec<(f64, f64)> = cumulative.iter().map(|(le, _)| (*le, 0.0)).collect();
    quantile_between(&zero, &cumulative, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels() {
        let text =
            "# HELP x y\n# TYPE a counter\na 3\nb{outcome=\"sold_out\",k=\"q\\\"x\"} 4.5\nc_bucket{le=\"+Inf\"} 7\n";
        let s = parse(text);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].name.as_str(), s[0].value), ("a", 3.0));
        assert_eq!(s[1].label("outcome"), Some("sold_out"));
        assert_eq!(s[1].label("k"), Some("q\"x"));
        assert_eq!(s[2].label("le"), Some("+Inf"));
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let before = [(0.001, 0.0), (0.01, 0.0), (f64::INFINITY, 0.0)];
        let after = [(0.001, 50.0), (0.01, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile_between(&before, &after, 0.5), Some(0.001));
        let p99 = quantile_between(&before, &after, 0.99).unwrap();
        assert!((p99 - (0.001 + 0.009 * 49.0 / 50.0)).abs() < 1e-12, "{p99}");
        assert_eq!(quantile_between(&after, &after, 0.99), None, "nothing new");
        assert_eq!(quantile_of_counts(&[0.001, 0.01], &[50, 50, 0], 0.5), Some(0.001));
        assert_eq!(quantile_of_counts(&[0.001, 0.01], &[0, 0, 0], 0.5), None);
    }
}
