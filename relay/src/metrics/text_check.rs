//! A strict checker of Prometheus text exposition (format 0.0.4), for tests.
//!
//! It accepts what the format allows that hark emits and rejects anything a scraper could
//! misread: every sample line is `name{labels} value`; `# HELP` and `# TYPE` come once per
//! family, before its samples; a family's samples are contiguous; no series repeats; counters
//! end in `_total` and never go negative; each histogram's `le` bounds increase, its bucket
//! counts never decrease, and its `+Inf` bucket equals its `_count`; histograms and summaries
//! have `_sum` and `_count`.

use std::collections::{BTreeMap, BTreeSet};

/// A sample's labels, `(name, value)` in line order.
pub(crate) type Labels = Vec<(String, String)>;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// A parsed, checked exposition.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    pub samples: Vec<Sample>,
    /// Family name -> type.
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of the series `name` with exactly `labels` (any order).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut wanted: Vec<(&str, &str)> = labels.to_vec();
        wanted.sort_unstable();
        self.samples
            .iter()
            .find(|s| {
                let mut have: Vec<(&str, &str)> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                have.sort_unstable();
                s.name == name && have == wanted
            })
            .map(|s| s.value)
    }
}

#[derive(Default)]
struct FamilyState {
    help: bool,
    kind: Option<String>,
    has_samples: bool,
}

/// Parses and checks `text`; the error names the offending line.
pub(crate) fn parse(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut exposition = Exposition::default();
    let mut families: BTreeMap<String, FamilyState> = BTreeMap::new();
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series: BTreeSet<(String, Labels)> = BTreeSet::new();

    for (number, line) in text.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {line:?}", number + 1);
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let keyword = words.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let name = words.next().ok_or_else(|| at("no metric name"))?;
            if !is_metric_name(name) {
                return Err(at("bad metric name"));
            }
            let family = families.entry(name.to_string()).or_default();
            if family.has_samples {
                return Err(at("HELP/TYPE after the family's samples"));
            }
            if keyword == "HELP" {
                if family.help {
                    return Err(at("second HELP"));
                }
                if words.next().is_none_or(|help| help.trim().is_empty()) {
                    return Err(at("empty HELP"));
                }
                family.help = true;
            } else {
                let kind = words.next().ok_or_else(|| at("no type"))?;
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(at("unknown type"));
                }
                if family.kind.is_some() {
                    return Err(at("second TYPE"));
                }
                family.kind = Some(kind.to_string());
                exposition.types.insert(name.to_string(), kind.to_string());
            }
            continue;
        }

        let sample = parse_sample(line).map_err(|why| at(&why))?;
        let family_name = family_of(&sample.name, &exposition.types)
            .ok_or_else(|| at("sample of an undeclared family"))?;
        let family = families
            .get_mut(&family_name)
            .ok_or_else(|| at("sample of an undeclared family"))?;
        if !family.help {
            return Err(at("sample before its family's HELP"));
        }
        let kind = family.kind.clone().ok_or_else(|| at("no TYPE"))?;
        family.has_samples = true;
        if current.as_deref() != Some(family_name.as_str()) {
            if closed.contains(&family_name) {
                return Err(at("the family's samples are not contiguous"));
            }
            if let Some(previous) = current.replace(family_name.clone()) {
                closed.insert(previous);
            }
        }
        let mut key_labels = sample.labels.clone();
        key_labels.sort_unstable();
        if !series.insert((sample.name.clone(), key_labels)) {
            return Err(at("repeated series"));
        }
        match kind.as_str() {
            "counter" => {
                if !sample.name.ends_with("_total") {
                    return Err(at("counter name does not end in _total"));
                }
                if sample.value.is_nan() || sample.value < 0.0 {
                    return Err(at("negative counter"));
                }
            }
            "histogram" => {
                if sample.name == family_name {
                    return Err(at("histogram sample without _bucket/_sum/_count"));
                }
                let has_le = sample.labels.iter().any(|(k, _)| k == "le");
                if sample.name.ends_with("_bucket") != has_le {
                    return Err(at("le belongs on exactly the _bucket samples"));
                }
            }
            "summary"
                if sample.name == family_name
                    && !sample.labels.iter().any(|(k, _)| k == "quantile") =>
            {
                return Err(at("summary quantile sample without a quantile label"));
            }
            _ => {}
        }
        exposition.samples.push(sample);
    }
    check_histograms(&exposition)?;
    check_summaries(&exposition)?;
    Ok(exposition)
}

fn family_of(name: &str, types: &BTreeMap<String, String>) -> Option<String> {
    if types.contains_key(name) {
        return Some(name.to_string());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            match types.get(base).map(String::as_str) {
                Some("histogram") => return Some(base.to_string()),
                Some("summary") if suffix != "_bucket" => return Some(base.to_string()),
                _ => {}
            }
        }
    }
    None
}

/// Labels other than `le`, sorted: one histogram series.
fn series_key(sample: &Sample) -> Labels {
    let mut labels: Labels = sample
        .labels
        .iter()
        .filter(|(k, _)| k != "le")
        .cloned()
        .collect();
    labels.sort_unstable();
    labels
}

fn check_histograms(exposition: &Exposition) -> Result<(), String> {
    for (family, kind) in &exposition.types {
        if kind != "histogram" {
            continue;
        }
        let bucket_name = format!("{family}_bucket");
        let mut buckets: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        for sample in exposition.samples.iter().filter(|s| s.name == bucket_name) {
            let le = sample
                .labels
                .iter()
                .find(|(k, _)| k == "le")
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            let le = parse_value(le).map_err(|why| format!("{family}: le: {why}"))?;
            buckets
                .entry(series_key(sample))
                .or_default()
                .push((le, sample.value));
        }
        for (labels, series) in &buckets {
            for pair in series.windows(2) {
                if pair[1].0 <= pair[0].0 {
                    return Err(format!("{family}{labels:?}: le bounds do not increase"));
                }
                if pair[1].1 < pair[0].1 {
                    return Err(format!("{family}{labels:?}: bucket counts decrease"));
                }
            }
            let Some(&(last_le, inf_count)) = series.last() else {
                continue;
            };
            if last_le != f64::INFINITY {
                return Err(format!("{family}{labels:?}: no +Inf bucket"));
            }
            let count = series_value(exposition, &format!("{family}_count"), labels)
                .ok_or_else(|| format!("{family}{labels:?}: no _count"))?;
            if count != inf_count {
                return Err(format!(
                    "{family}{labels:?}: +Inf {inf_count} != _count {count}"
                ));
            }
            series_value(exposition, &format!("{family}_sum"), labels)
                .ok_or_else(|| format!("{family}{labels:?}: no _sum"))?;
        }
    }
    Ok(())
}

fn check_summaries(exposition: &Exposition) -> Result<(), String> {
    for (family, kind) in &exposition.types {
        if kind != "summary" {
            continue;
        }
        let keys: BTreeSet<Labels> = exposition
            .samples
            .iter()
            .filter(|s| &s.name == family)
            .map(|s| {
                let mut labels: Labels = s
                    .labels
                    .iter()
                    .filter(|(k, _)| k != "quantile")
                    .cloned()
                    .collect();
                labels.sort_unstable();
                labels
            })
            .collect();
        for labels in keys {
            for suffix in ["_sum", "_count"] {
                series_value(exposition, &format!("{family}{suffix}"), &labels)
                    .ok_or_else(|| format!("{family}{labels:?}: no {suffix}"))?;
            }
        }
    }
    Ok(())
}

fn series_value(exposition: &Exposition, name: &str, labels: &[(String, String)]) -> Option<f64> {
    exposition
        .samples
        .iter()
        .find(|s| s.name == name && series_key(s) == labels)
        .map(|s| s.value)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or("no space between name and value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or("no single space before the value")?;
    if value.contains(' ') {
        return Err("more than a value after the labels (timestamps are not emitted)".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value: parse_value(value)?,
    })
}

/// Parses `name="value",...}` and returns the labels and what follows the `}`.
fn parse_labels(mut text: &str) -> Result<(Labels, &str), String> {
    let mut labels: Labels = Vec::new();
    if let Some(after) = text.strip_prefix('}') {
        return Ok((labels, after));
    }
    loop {
        let eq = text.find('=').ok_or("label without '='")?;
        let name = &text[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        if labels.iter().any(|(k, _)| k == name) {
            return Err(format!("repeated label {name:?}"));
        }
        let mut chars = text[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err("label value not quoted".into());
        }
        let mut value = String::new();
        let mut closed_at = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    closed_at = Some(eq + 1 + i + 1);
                    break;
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    _ => return Err("bad escape in a label value".into()),
                },
                '\n' => return Err("newline in a label value".into()),
                c => value.push(c),
            }
        }
        let closed_at = closed_at.ok_or("unterminated label value")?;
        labels.push((name.to_string(), value));
        text = &text[closed_at..];
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        text = text
            .strip_prefix(',')
            .ok_or("labels not separated by ','")?;
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text
            .chars()
            .all(|c| c.is_ascii_digit() || "+-.eE".contains(c))
            && !text.is_empty() =>
        {
            text.parse()
                .map_err(|_| format!("bad sample value {text:?}"))
        }
        _ => Err(format!("bad sample value {text:?}")),
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::parse;

    const GOOD: &str = "\
# HELP a_total A counter.
# TYPE a_total counter
a_total{shard=\"1-0\"} 3
# HELP h A histogram.
# TYPE h histogram
h_bucket{le=\"0.1\"} 1
h_bucket{le=\"+Inf\"} 2
h_sum 0.3
h_count 2
";

    #[test]
    fn accepts_a_well_formed_exposition() {
        let exposition = parse(GOOD).unwrap();
        assert_eq!(exposition.value("a_total", &[("shard", "1-0")]), Some(3.0));
        assert_eq!(exposition.value("h_count", &[]), Some(2.0));
    }

    /// The checker is what the render tests rely on, so each rule must actually reject.
    #[test]
    fn rejects_each_broken_rule() {
        let broken = [
            ("no HELP", GOOD.replace("# HELP a_total A counter.\n", "")),
            (
                "TYPE after samples",
                format!("{GOOD}# TYPE a_total counter\n"),
            ),
            ("bad value", GOOD.replace("} 3", "} three")),
            ("no space", GOOD.replace("} 3", "}3")),
            ("unquoted label", GOOD.replace("\"1-0\"", "1-0")),
            (
                "counter without _total",
                GOOD.replace("a_total", "a_count_x"),
            ),
            (
                "decreasing buckets",
                GOOD.replace("\"+Inf\"} 2", "\"+Inf\"} 0"),
            ),
            ("+Inf != count", GOOD.replace("h_count 2", "h_count 5")),
            ("no +Inf", GOOD.replace("h_bucket{le=\"+Inf\"} 2\n", "")),
            ("no _sum", GOOD.replace("h_sum 0.3\n", "")),
            (
                "repeated series",
                GOOD.replace("h_sum 0.3", "h_sum 0.3\nh_sum 0.3"),
            ),
            (
                "not contiguous",
                format!("{GOOD}a_total{{shard=\"2-0\"}} 1\n"),
            ),
            ("undeclared", format!("{GOOD}b 1\n")),
            ("no newline at end", GOOD.trim_end().to_string()),
            ("timestamp", GOOD.replace("} 3", "} 3 1700000000")),
        ];
        for (rule, text) in broken {
            assert!(parse(&text).is_err(), "accepted with {rule}:\n{text}");
        }
    }
}
