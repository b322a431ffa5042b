//! Disclosure control, as properties: for random tables, every cell under the threshold is
//! hidden, every published number is rounded, no total is below one of its cells, and a
//! solver that subtracts published cells from published row and column totals never
//! recovers a suppressed value; and a differencing attacker, polling every report it may ask
//! for just before and just after each new referral, never sees a report change.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use proptest::prelude::*;
use refex::report::{Fact, Period, Table, round, tabulate};

fn facts(grid: &[Vec<u64>]) -> Vec<Fact> {
    let mut out = Vec::new();
    for (r, row) in grid.iter().enumerate() {
        for (c, &n) in row.iter().enumerate() {
            for _ in 0..n {
                out.push(Fact {
                    values: [
                        format!("r{r:02}"),
                        "t".into(),
                        "s".into(),
                        "k".into(),
                        format!("c{c:02}"),
                        "x".into(),
                    ],
                });
            }
        }
    }
    out
}

/// Repeatedly solves any line with exactly one unknown by subtraction; returns what it found.
fn solve(t: &Table) -> Vec<((usize, usize), i64)> {
    let rows = t.rows.len();
    let cols = t.columns.len();
    let mut known: Vec<Vec<Option<i64>>> = t
        .rows
        .iter()
        .map(|r| r.cells.iter().map(|c| c.map(|v| v as i64)).collect())
        .collect();
    let mut found = Vec::new();
    loop {
        let mut progress = false;
        let mut lines: Vec<(Vec<(usize, usize)>, i64)> = Vec::new();
        for r in 0..rows {
            if let Some(total) = t.rows[r].total {
                lines.push(((0..cols).map(|c| (r, c)).collect(), total as i64));
            }
        }
        if let Some(totals) = &t.column_totals {
            for (c, &total) in totals.iter().enumerate() {
                lines.push(((0..rows).map(|r| (r, c)).collect(), total as i64));
            }
        }
        // The grand total over the whole table, when published.
        if let Some(total) = t.grand_total {
            let all = (0..rows)
                .flat_map(|r| (0..cols).map(move |c| (r, c)))
                .collect();
            lines.push((all, total as i64));
        }
        for (line, total) in lines {
            let unknown: Vec<&(usize, usize)> = line
                .iter()
                .filter(|&&(r, c)| known[r][c].is_none())
                .collect();
            if unknown.len() == 1 {
                let (r, c) = *unknown[0];
                let sum: i64 = line.iter().filter_map(|&(r, c)| known[r][c]).sum();
                known[r][c] = Some(total - sum);
                found.push(((r, c), total - sum));
                progress = true;
            }
        }
        if !progress {
            return found;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn no_suppressed_cell_is_recovered_by_subtracting_totals(
        grid in (1usize..7, 1usize..7).prop_flat_map(|(r, c)| prop::collection::vec(prop::collection::vec(0u64..25, c), r)),
        two_way in any::<bool>(),
    ) {
        let by: Vec<usize> = if two_way { vec![0, 4] } else { vec![4] };
        let table = tabulate(&facts(&grid), &by, 5);
        // Rebuild the true values in the table's order.
        let truth = |r: usize, c: usize| -> u64 {
            let rk = &table.rows[r].key;
            let row = if two_way { rk[0][1..].parse::<usize>().unwrap() } else { usize::MAX };
            let col: usize = table.columns[c][1..].parse().unwrap();
            if two_way { grid[row][col] } else { grid.iter().map(|g| g[col]).sum() }
        };
        for (r, row) in table.rows.iter().enumerate() {
            for (c, cell) in row.cells.iter().enumerate() {
                let v = truth(r, c);
                if v > 0 && v < 5 {
                    prop_assert!(cell.is_none(), "small cell {v} published");
                }
                if let Some(p) = cell {
                    prop_assert_eq!(*p, round(v), "every published cell is rounded");
                    if let Some(total) = row.total {
                        prop_assert!(total >= *p, "row total {} below its cell {}", total, p);
                    }
                    if let Some(totals) = &table.column_totals {
                        prop_assert!(totals[c] >= *p, "column total {} below its cell {}", totals[c], p);
                    }
                }
            }
            prop_assert_eq!(row.total.unwrap_or(0) % 5, 0);
        }
        for ((r, c), guess) in solve(&table) {
            if table.rows[r].cells[c].is_none() {
                prop_assert_ne!(guess, truth(r, c) as i64, "suppressed cell recovered");
            }
        }
    }
}

/// Unix seconds of 00:00 UTC on the first of month `m` counted from January 2026.
fn month_start(m: i64) -> i64 {
    let (y, mo) = (2026 + m.div_euclid(12), m.rem_euclid(12) + 1);
    time::Date::from_calendar_date(y as i32, time::Month::try_from(mo as u8).unwrap(), 1)
        .unwrap()
        .midnight()
        .assume_utc()
        .unix_timestamp()
}

fn month_name(m: i64) -> String {
    format!("{:04}-{:02}", 2026 + m.div_euclid(12), m.rem_euclid(12) + 1)
}

/// What a report shows at `now`: the referrals received by then that fall in the period,
/// tabulated by month and recipient — or the refusal.
fn report_at(arrivals: &[(i64, usize)], from: &str, to: &str, now: i64) -> Option<Table> {
    let period = Period::parse(from, to, refex::timestamp::UnixTime::from_secs(now)).ok()?;
    let facts: Vec<Fact> = arrivals
        .iter()
        .filter(|(at, _)| *at < now && *at >= period.start.secs() && *at < period.end.secs())
        .map(|(at, kind)| Fact {
            values: [
                time::OffsetDateTime::from_unix_timestamp(*at)
                    .map(|t| format!("{:04}-{:02}", t.year(), u8::from(t.month())))
                    .unwrap(),
                "t".into(),
                "s".into(),
                format!("k{kind}"),
                "given".into(),
                "not-reviewed".into(),
            ],
        })
        .collect();
    Some(tabulate(&facts, &[0, 3], 5))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The attacker of finding 9: it polls every report it may ask for (every range of months
    /// around the data) the moment before and the moment after each referral arrives, and
    /// compares. Before the publication rule it read each new referral's cell off the change
    /// (114 → 115); now no report it may ask for ever changes.
    #[test]
    fn a_differencing_attacker_never_sees_a_report_change(
        arrivals in prop::collection::vec((0i64..(4 * 31 * 86_400), 0usize..3), 1..60),
        queries in prop::collection::vec((0i64..5, 0i64..5), 1..6),
    ) {
        let base = month_start(0);
        let arrivals: Vec<(i64, usize)> = arrivals.iter().map(|(s, k)| (base + s, *k)).collect();
        for &(at, _) in &arrivals {
            for &(a, b) in &queries {
                let (from, to) = (month_name(a.min(b)), month_name(a.max(b)));
                let before = report_at(&arrivals, &from, &to, at);
                let after = report_at(&arrivals, &from, &to, at + 1);
                // A report refused before or after (the moment a month ends) tells nothing.
                if let (Some(x), Some(y)) = (before, after) {
                    prop_assert_eq!(x, y, "{}..{} changed when a referral arrived at {}", from, to, at);
                }
            }
        }
    }
}
