//! Disclosure control, as a property: for random tables, every cell under the threshold is
//! hidden, and a solver that subtracts published cells from published (rounded) row and
//! column totals never recovers a suppressed value.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use proptest::prelude::*;
use refex::report::{Fact, Table, tabulate};

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
                    prop_assert_eq!(*p, v);
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
