//! Anonymised aggregate reports for commissioners: counts of disclosures (deliveries) by any
//! of month × referral type × sender kind × recipient kind × consent status × review outcome,
//! laid out as a two-way table (the last dimension across), with disclosure control. Pure:
//! rows in, a table out; no store, no records.
//!
//! The publication rule, and what each part defends against:
//!
//! - **Complete months only** ([`Period`]): a report covers whole calendar months that have
//!   ended, and every fact is taken as it stood at the end of the period (a decision or
//!   withdrawal after it does not move a count). A published table therefore never changes,
//!   so polling before and after a new referral (or a decision) tells nothing about it.
//! - **Primary suppression**: a cell under the threshold (5) is hidden.
//! - **Secondary suppression**: no row or column whose total is published has exactly one
//!   hidden cell, so no total minus the visible cells gives a hidden one away.
//! - **Rounding**: every published number, cell and total, is rounded to the nearest 5, so
//!   the difference of two published numbers (two overlapping periods, say) is uncertain by
//!   up to ±4; rounding is monotonic, so no total is ever shown below one of its own cells.
//! - A hidden cell is published as *suppressed*, never as `<5`: cells hidden to protect
//!   another can be large.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::timestamp::UnixTime;

/// The dimensions a report can be broken down by.
pub const DIMENSIONS: &[&str] = &[
    "month",
    "type",
    "sender_kind",
    "recipient_kind",
    "consent",
    "review",
];

/// Every published number is rounded to a multiple of this.
pub const ROUND_TO: u64 = 5;

/// What a published cell shows when it is hidden (text and CSV).
pub const SUPPRESSED: &str = "suppressed";

/// One disclosure, described only by its dimensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact {
    /// Each dimension's value, in [`DIMENSIONS`] order.
    pub values: [String; 6],
}

/// Why a report request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    /// An unknown dimension was asked for.
    #[error("unknown dimension {0:?} (use {DIMENSIONS:?})")]
    Dimension(String),
    /// No dimension, or one named twice.
    #[error("name between one and six distinct dimensions")]
    Shape,
    /// `from` or `to` is not a month or a date.
    #[error("{0:?} is not a month (YYYY-MM) or a date (YYYY-MM-DD)")]
    Date(String),
    /// `from` is a date other than the first of its month.
    #[error("\"from\" must be a month or the first day of one (reports cover whole months): {0:?}")]
    FromMidMonth(String),
    /// `to` is a date other than the last of its month.
    #[error("\"to\" must be a month or the last day of one (reports cover whole months): {0:?}")]
    ToMidMonth(String),
    /// `to` is before `from`.
    #[error("\"to\" is before \"from\"")]
    Backwards,
    /// `to` reaches into a month that has not ended.
    #[error(
        "\"to\" must be a month that has ended (the latest is {latest}): a report covers complete months only, so it never changes as new referrals arrive"
    )]
    Incomplete {
        /// The latest month a report may reach, `YYYY-MM`.
        latest: String,
    },
}

/// How long after a month ends it may be reported: far above the longest a request may take
/// between its referral's timestamp and its commit.
pub const PUBLICATION_DELAY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The months a report covers: whole calendar months (UTC), all of them ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    /// The start of the first month.
    pub start: UnixTime,
    /// The start of the month after the last: facts are taken as they stood then.
    pub end: UnixTime,
}

impl Period {
    /// Reads `from` and `to` (`YYYY-MM`, or the first and last day of a month as
    /// `YYYY-MM-DD`), refusing any period that reaches into the month of `now`.
    pub fn parse(from: &str, to: &str, now: UnixTime) -> Result<Self, ReportError> {
        let (first, from_day) = month_of(from)?;
        if from_day.is_some_and(|d| d != 1) {
            return Err(ReportError::FromMidMonth(from.to_owned()));
        }
        let (last, to_day) = month_of(to)?;
        if to_day.is_some_and(|d| d != last.month().length(last.year())) {
            return Err(ReportError::ToMidMonth(to.to_owned()));
        }
        if last < first {
            return Err(ReportError::Backwards);
        }
        // A month is reported once it has ended and every referral received in it has had
        // time to commit (a request may take up to its time-out after it was stamped): the
        // month of `now - PUBLICATION_DELAY` is the first one that may not be.
        let open_month =
            time::OffsetDateTime::from_unix_timestamp(now.before(PUBLICATION_DELAY).secs())
                .map(|t| t.date().replace_day(1).unwrap_or(t.date()))
                .unwrap_or(time::Date::MIN);
        let end = next_month(last);
        if end > open_month {
            let latest = open_month.previous_day().unwrap_or(open_month);
            return Err(ReportError::Incomplete {
                latest: format!("{:04}-{:02}", latest.year(), u8::from(latest.month())),
            });
        }
        let unix = |d: time::Date| UnixTime::from_secs(d.midnight().assume_utc().unix_timestamp());
        Ok(Self {
            start: unix(first),
            end: unix(end),
        })
    }
}

/// The first day of the month a `YYYY-MM` or `YYYY-MM-DD` names, and the day if given.
fn month_of(text: &str) -> Result<(time::Date, Option<u8>), ReportError> {
    let bad = || ReportError::Date(text.to_owned());
    let parts: Vec<&str> = text.split('-').collect();
    let number = |s: &str, len: usize| -> Result<u32, ReportError> {
        if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (y, m, d) = match parts.as_slice() {
        [y, m] => (number(y, 4)?, number(m, 2)?, None),
        [y, m, d] => (number(y, 4)?, number(m, 2)?, Some(number(d, 2)?)),
        _ => return Err(bad()),
    };
    let month = u8::try_from(m)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(bad)?;
    let year = i32::try_from(y).map_err(|_| bad())?;
    let first = time::Date::from_calendar_date(year, month, 1).map_err(|_| bad())?;
    let day = match d {
        Some(d) => {
            let d = u8::try_from(d).map_err(|_| bad())?;
            time::Date::from_calendar_date(year, month, d).map_err(|_| bad())?;
            Some(d)
        }
        None => None,
    };
    Ok((first, day))
}

/// The first day of the month after `first`'s.
fn next_month(first: time::Date) -> time::Date {
    let (y, m) = match first.month() {
        time::Month::December => (first.year() + 1, time::Month::January),
        m => (first.year(), m.next()),
    };
    time::Date::from_calendar_date(y, m, 1).unwrap_or(time::Date::MAX)
}

/// A published cell: a count, or suppressed.
pub type Cell = Option<u64>;

/// The published table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Table {
    /// The dimensions, rows first, the last across.
    pub by: Vec<String>,
    /// Cells under this are suppressed.
    pub threshold: u64,
    /// Every published number (cell and total) is rounded to a multiple of this.
    pub rounded_to: u64,
    /// Column labels (values of the last dimension).
    pub columns: Vec<String>,
    /// Rows: the values of the other dimensions, the rounded cells, and the rounded row total.
    pub rows: Vec<Row>,
    /// Rounded column totals; absent when each column has one cell (the total would be it).
    pub column_totals: Option<Vec<u64>>,
    /// Rounded grand total; absent when the table is one hidden cell.
    pub grand_total: Option<u64>,
    /// How many cells are suppressed.
    pub suppressed: usize,
}

/// One row of a [`Table`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Row {
    /// The row's values of the leading dimensions (empty for a one-dimension report).
    pub key: Vec<String>,
    /// One cell per column, rounded; `None` when suppressed.
    pub cells: Vec<Cell>,
    /// Rounded row total; absent when each row has one cell (the total would be it).
    pub total: Option<u64>,
}

/// Rounds to the nearest multiple of [`ROUND_TO`] (halves up).
pub fn round(n: u64) -> u64 {
    (n + ROUND_TO / 2) / ROUND_TO * ROUND_TO
}

/// Parses `by`, e.g. `month,type`.
pub fn parse_by(by: &str) -> Result<Vec<usize>, ReportError> {
    let mut out = Vec::new();
    for name in by.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let i = DIMENSIONS
            .iter()
            .position(|d| *d == name)
            .ok_or_else(|| ReportError::Dimension(name.to_owned()))?;
        if out.contains(&i) {
            return Err(ReportError::Shape);
        }
        out.push(i);
    }
    if out.is_empty() {
        return Err(ReportError::Shape);
    }
    Ok(out)
}

/// Counts `facts` by the dimensions `by` and applies disclosure control.
pub fn tabulate(facts: &[Fact], by: &[usize], threshold: u64) -> Table {
    let (lead, last) = by.split_at(by.len() - 1);
    let last = last[0];
    let mut counts: BTreeMap<(Vec<String>, String), u64> = BTreeMap::new();
    let mut row_keys = BTreeSet::new();
    let mut columns = BTreeSet::new();
    for f in facts {
        let key: Vec<String> = lead.iter().map(|&d| f.values[d].clone()).collect();
        let col = f.values[last].clone();
        *counts.entry((key.clone(), col.clone())).or_default() += 1;
        row_keys.insert(key);
        columns.insert(col);
    }
    let columns: Vec<String> = columns.into_iter().collect();
    let row_keys: Vec<Vec<String>> = row_keys.into_iter().collect();
    let values: Vec<Vec<u64>> = row_keys
        .iter()
        .map(|k| {
            columns
                .iter()
                .map(|c| counts.get(&(k.clone(), c.clone())).copied().unwrap_or(0))
                .collect()
        })
        .collect();
    // A total over a single cell is that cell: publish totals only for longer lines, and
    // protect exactly the lines whose totals are published.
    let row_totals = columns.len() > 1;
    let column_totals = row_keys.len() > 1;
    let hidden = suppress(&values, threshold, row_totals, column_totals);
    let any_hidden = hidden.iter().flatten().any(|h| *h);
    let rows: Vec<Row> = row_keys
        .into_iter()
        .zip(values.iter().zip(&hidden))
        .map(|(key, (vals, hid))| Row {
            key,
            cells: vals
                .iter()
                .zip(hid)
                .map(|(v, h)| (!h).then_some(round(*v)))
                .collect(),
            total: row_totals.then(|| round(vals.iter().sum())),
        })
        .collect();
    Table {
        by: by.iter().map(|&d| DIMENSIONS[d].to_owned()).collect(),
        threshold,
        rounded_to: ROUND_TO,
        column_totals: column_totals.then(|| {
            (0..columns.len())
                .map(|c| round(values.iter().map(|r| r[c]).sum()))
                .collect()
        }),
        columns,
        suppressed: hidden.iter().flatten().filter(|h| **h).count(),
        rows,
        grand_total: (row_totals || column_totals || !any_hidden)
            .then(|| round(values.iter().flatten().sum())),
    }
}

/// Which cells to hide: primary (0 < n < threshold), then secondary until no row or column
/// whose total is published has exactly one hidden cell. The secondary cell chosen
/// is the smallest visible one in that line, so the least information is lost.
fn suppress(
    values: &[Vec<u64>],
    threshold: u64,
    row_totals: bool,
    column_totals: bool,
) -> Vec<Vec<bool>> {
    let mut hidden: Vec<Vec<bool>> = values
        .iter()
        .map(|r| r.iter().map(|&v| v > 0 && v < threshold).collect())
        .collect();
    let rows = values.len();
    let cols = values.first().map_or(0, Vec::len);
    loop {
        let mut changed = false;
        let mut lines: Vec<Vec<(usize, usize)>> = Vec::new();
        if row_totals {
            lines.extend((0..rows).map(|r| (0..cols).map(|c| (r, c)).collect()));
        }
        if column_totals {
            lines.extend((0..cols).map(|c| (0..rows).map(|r| (r, c)).collect()));
        }
        for line in lines {
            let n_hidden = line.iter().filter(|&&(r, c)| hidden[r][c]).count();
            if n_hidden == 1 {
                let pick = line
                    .iter()
                    .filter(|&&(r, c)| !hidden[r][c])
                    .min_by_key(|&&(r, c)| (values[r][c] == 0, values[r][c]));
                if let Some(&(r, c)) = pick {
                    hidden[r][c] = true;
                    changed = true;
                }
            }
        }
        if !changed {
            return hidden;
        }
    }
}

/// A delivery row as report dimensions: month, type, sender and recipient *kinds* (never
/// partner ids in the dimensions other than kinds), consent status, and the review outcome
/// as it stood at the end of the reported period (the row is read so).
pub fn fact(
    row: &crate::store::records::FactRow,
    kind_of: impl Fn(&crate::identity::PartnerId) -> String,
) -> Fact {
    use crate::audit::event::Verdict;
    let month = time::OffsetDateTime::from_unix_timestamp(row.received_at.secs())
        .map(|t| format!("{:04}-{:02}", t.year(), u8::from(t.month())))
        .unwrap_or_else(|_| "unknown".into());
    let review = match (row.decision, row.held) {
        (Some(Verdict::Approve), _) => "approved",
        (Some(Verdict::Reject), _) => "rejected",
        (None, false) => "not-reviewed",
        (None, true) if row.closed_undecided => "closed-undecided",
        (None, true) if row.withdrawn => "withdrawn-before-review",
        (None, true) => "pending",
    };
    Fact {
        values: [
            month,
            row.referral_type.to_string(),
            kind_of(&row.sender),
            kind_of(&row.recipient),
            row.consent.as_str().to_owned(),
            review.to_owned(),
        ],
    }
}

/// The table as CSV in long form: one line per cell, `suppressed` where hidden.
pub fn to_csv(t: &Table) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<&str> = t.by.iter().map(String::as_str).collect();
    header.push("count");
    w.write_record(&header)?;
    for row in &t.rows {
        for (col, cell) in t.columns.iter().zip(&row.cells) {
            let mut rec: Vec<String> = row.key.clone();
            rec.push(col.clone());
            rec.push(cell.map_or_else(|| SUPPRESSED.to_owned(), |v| v.to_string()));
            w.write_record(&rec)?;
        }
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The table for people: aligned columns, `suppressed` where hidden (never `<5`: a cell
/// hidden to protect another can be large), every number rounded.
pub fn render_text(t: &Table) -> String {
    let cell = |c: &Cell| c.map_or_else(|| SUPPRESSED.to_owned(), |v| v.to_string());
    let mut grid: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<String> = t.by[..t.by.len() - 1].to_vec();
    header.extend(t.columns.iter().cloned());
    header.push("total".into());
    grid.push(header);
    for row in &t.rows {
        let mut line = row.key.clone();
        line.extend(row.cells.iter().map(cell));
        line.push(row.total.map_or_else(String::new, |v| v.to_string()));
        grid.push(line);
    }
    let mut totals: Vec<String> = vec![String::new(); t.by.len() - 1];
    if let Some(first) = totals.first_mut() {
        *first = "total".into();
    }
    match &t.column_totals {
        Some(ct) => totals.extend(ct.iter().map(|v| v.to_string())),
        None => totals.extend(t.columns.iter().map(|_| String::new())),
    }
    totals.push(t.grand_total.map_or_else(String::new, |v| v.to_string()));
    grid.push(totals);
    let widths: Vec<usize> = (0..grid[0].len())
        .map(|i| {
            grid.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in grid {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "every number rounded to the nearest {}; {} cells suppressed (counts under {}, and cells hidden so no total gives one away)\n",
        t.rounded_to, t.suppressed, t.threshold
    ));
    out
}

/// A step for an axis from 0 to `max` with about five ticks, on the 1-2-5 scale (and never
/// finer than the rounding: every published number is a multiple of it).
fn tick_step(max: u64, rounded_to: u64) -> u64 {
    let rough = (max / 5).max(1);
    let mut magnitude = 1u64;
    while magnitude * 10 <= rough {
        magnitude *= 10;
    }
    let step = [1, 2, 5, 10]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10 * magnitude);
    step.max(rounded_to.max(1))
}

/// The chart's text alternative: every cell in words, suppressed ones said as suppressed.
pub fn chart_text(t: &Table) -> String {
    let mut parts = Vec::new();
    for row in &t.rows {
        let cells: Vec<String> = row
            .cells
            .iter()
            .zip(&t.columns)
            .map(|(c, col)| {
                let col = crate::schema::document::code_words(col);
                match c {
                    Some(v) => format!("{col} {v}"),
                    None => format!("{col} {SUPPRESSED}"),
                }
            })
            .collect();
        parts.push(format!("{}: {}", row.key.join(" "), cells.join(", ")));
    }
    format!(
        "Referrals by month and type (every number rounded to the nearest {}; counts under {} \
         suppressed). {}.",
        t.rounded_to,
        t.threshold,
        parts.join("; ")
    )
}

/// An SVG bar chart of a `month,type` table: a title, a y axis with values, one group of
/// bars per month (the month under it), one bar per type with its count above it, a legend;
/// suppressed cells drawn as dashed outlines labelled "suppressed", never as values. The
/// chart carries its text alternative ([`chart_text`]) as `<desc>`.
pub fn chart_svg(t: &Table) -> String {
    const W: usize = 960;
    const H: usize = 480;
    const LEFT: usize = 80;
    const RIGHT: usize = 260;
    const TOP: usize = 60;
    const BOTTOM: usize = 70;
    // Distinguishable for common colour-vision deficiencies (Okabe-Ito), each >= 3:1 on white.
    const COLOURS: &[&str] = &[
        "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56641A", "#6B4C9A",
    ];
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let top_value = t
        .rows
        .iter()
        .flat_map(|r| r.cells.iter().map(|c| c.unwrap_or(t.threshold)))
        .max()
        .unwrap_or(0)
        .max(t.threshold)
        .max(1);
    let step = tick_step(top_value, t.rounded_to);
    let axis_max = top_value.div_ceil(step) * step;
    let y = |v: u64| TOP + plot_h - (v as usize * plot_h / axis_max as usize);
    let groups = t.rows.len().max(1);
    let group_w = plot_w / groups;
    let bar_w = (group_w.saturating_sub(12) / t.columns.len().max(1)).max(3);
    let title = "Referrals by month and type";
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         role=\"img\" aria-labelledby=\"chart-title chart-desc\" font-family=\"sans-serif\">\
         <title id=\"chart-title\">{title}</title><desc id=\"chart-desc\">{}</desc>\
         <rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\
         <text x=\"{LEFT}\" y=\"28\" font-size=\"18\" font-weight=\"bold\">{title}</text>\
         <text x=\"{LEFT}\" y=\"48\" font-size=\"12\" fill=\"#333\">Every number rounded to the nearest {}; counts under {} suppressed</text>",
        esc(&chart_text(t)),
        t.rounded_to,
        t.threshold,
    );
    // The y axis: gridlines and values.
    let mut v = 0;
    while v <= axis_max {
        svg.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{yy}\" x2=\"{r}\" y2=\"{yy}\" stroke=\"#ccc\"/>\
             <text x=\"{lx}\" y=\"{ty}\" font-size=\"12\" text-anchor=\"end\">{v}</text>",
            yy = y(v),
            r = LEFT + plot_w,
            lx = LEFT - 8,
            ty = y(v) + 4,
        ));
        v += step;
    }
    svg.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"black\"/>\
         <line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\
         <text transform=\"translate(20 {mid}) rotate(-90)\" font-size=\"13\" text-anchor=\"middle\">Referrals</text>\
         <text x=\"{cx}\" y=\"{xl}\" font-size=\"13\" text-anchor=\"middle\">Month</text>",
        b = TOP + plot_h,
        r = LEFT + plot_w,
        mid = TOP + plot_h / 2,
        cx = LEFT + plot_w / 2,
        xl = H - 18,
    ));
    for (g, row) in t.rows.iter().enumerate() {
        let x0 = LEFT + g * group_w + 6;
        for (i, c) in row.cells.iter().enumerate() {
            let x = x0 + i * bar_w;
            let colour = COLOURS[i % COLOURS.len()];
            let column = esc(&crate::schema::document::code_words(&t.columns[i]));
            let label_x = x + bar_w / 2;
            match c {
                Some(v) => svg.push_str(&format!(
                    "<rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{colour}\"><title>{column}: {v}</title></rect>\
                     <text x=\"{label_x}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{v}</text>",
                    y(*v), bar_w - 1, TOP + plot_h - y(*v), y(*v).saturating_sub(4)
                )),
                None => svg.push_str(&format!(
                    "<rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"{colour}\" \
                     stroke-width=\"2\" stroke-dasharray=\"4,3\"><title>{column}: {SUPPRESSED}</title></rect>\
                     <text x=\"{label_x}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{SUPPRESSED}</text>",
                    y(t.threshold), bar_w - 1, TOP + plot_h - y(t.threshold), y(t.threshold).saturating_sub(4)
                )),
            }
        }
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">{}</text>",
            LEFT + g * group_w + group_w / 2,
            TOP + plot_h + 18,
            esc(&row.key.join(" "))
        ));
    }
    let legend_x = LEFT + plot_w + 20;
    svg.push_str(&format!(
        "<text x=\"{legend_x}\" y=\"{}\" font-size=\"13\" font-weight=\"bold\">Referral type</text>",
        TOP + 4
    ));
    for (i, col) in t.columns.iter().enumerate() {
        svg.push_str(&format!(
            "<rect x=\"{legend_x}\" y=\"{}\" width=\"14\" height=\"14\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>",
            TOP + 14 + i * 20,
            COLOURS[i % COLOURS.len()],
            legend_x + 20,
            TOP + 26 + i * 20,
            esc(&crate::schema::document::code_words(col))
        ));
    }
    svg.push_str(&format!(
        "<rect x=\"{legend_x}\" y=\"{}\" width=\"14\" height=\"14\" fill=\"none\" stroke=\"black\" stroke-dasharray=\"4,3\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"12\">{SUPPRESSED} (small number)</text>",
        TOP + 14 + t.columns.len() * 20,
        legend_x + 20,
        TOP + 26 + t.columns.len() * 20,
    ));
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_the_nearest_five() {
        assert_eq!(
            [
                round(0),
                round(2),
                round(3),
                round(12),
                round(13),
                round(15)
            ],
            [0, 0, 5, 10, 15, 15]
        );
    }

    #[test]
    fn a_lone_small_cell_takes_a_partner_in_its_row_and_column() {
        let v = vec![vec![3, 7, 20], vec![9, 8, 30]];
        let h = suppress(&v, 5, true, true);
        assert!(h[0][0], "primary");
        assert_eq!(h.iter().flatten().filter(|x| **x).count(), 4, "{h:?}");
        for row in &h {
            assert_ne!(row.iter().filter(|x| **x).count(), 1);
        }
        for c in 0..3 {
            assert_ne!(h.iter().filter(|r| r[c]).count(), 1);
        }
    }
}
