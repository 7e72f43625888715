#!/usr/bin/env python3
"""Query the metrics the promduck collector stored, through the promduck DuckDB
extension (``prom_metrics``), print summaries and optionally save the rows as CSV.

    python examples/duckdb/query_metrics.py --data-dir data --last-days 7
    python examples/duckdb/query_metrics.py --date 2024-03-01 --api-proxy api-proxy-1 --output out.csv

Needs only Python 3.8+ and the ``duckdb`` package; the extension is
``<repo>/build/promduck.duckdb_extension`` (``make build``) unless
``$PROMDUCK_EXTENSION`` names another file.

Every user value reaches DuckDB as a bound parameter of one fixed SQL text.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EXTENSION = REPO_ROOT / "build" / "promduck.duckdb_extension"
PROG = "query_metrics.py"
SAMPLE_ROWS = 10
MAX_LAST_DAYS = 36600

# The one query that reads data. prom_metrics() opens only the folders of the
# selected days and the files of the selected proxies, and skips the rows of
# other metrics; NULL parameters mean "no restriction".
SELECT_SQL = """
CREATE TEMP TABLE selected AS
SELECT epoch_ms(timestamp) AS ts_ms, date, api_proxy, metric_name, value, labels
FROM prom_metrics(data_dir := $data_dir, date := $date, start_date := $start_date, end_date := $end_date,
                  proxy := $proxy, metric := $metric)
ORDER BY date, api_proxy, metric_name, ts_ms, CAST(labels AS VARCHAR)
"""

PER_PROXY_SQL = """
SELECT api_proxy, metric_name, count(*) AS rows, sum(value) AS total, avg(value) AS average,
       min(value) AS min, max(value) AS max
FROM selected GROUP BY api_proxy, metric_name ORDER BY api_proxy, metric_name
"""

PER_DAY_SQL = """
SELECT date, api_proxy, metric_name, count(*) AS rows, sum(value) AS total, max(value) AS max
FROM selected GROUP BY date, api_proxy, metric_name ORDER BY date, api_proxy, metric_name
"""

CSV_COLUMNS = ["timestamp", "date", "api_proxy", "metric_name", "value", "labels"]


class UserError(Exception):
    """A problem with the input: reported on one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def day_arg(text: str) -> date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise argparse.ArgumentTypeError(f"invalid date {text!r}: expected YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid date {text!r}: no such day") from None


def days_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_LAST_DAYS:
        raise argparse.ArgumentTypeError(f"invalid number of days {text!r}: expected 1..{MAX_LAST_DAYS}")
    return n


def parse_args(argv=None) -> argparse.Namespace:
    default_dir = os.environ.get("PROMDUCK_DATA_DIR") or "./data"
    p = Parser(
        prog=PROG,
        description="Query Prometheus metrics stored by the promduck collector "
                    "(<data-dir>/YYYY-MM-DD/<proxy>.parquet) with DuckDB and the promduck "
                    "extension: prints totals per API proxy and metric, per day, and the first "
                    "rows; --output saves every selected row as CSV.",
        epilog="Without --date or --last-days every day in the data directory is read. "
               "The extension is $PROMDUCK_EXTENSION, else <repo>/build/promduck.duckdb_extension. "
               "Exit status: 0 rows found, 1 no rows matched, 2 error (bad option, missing data "
               "directory or extension, unknown API proxy or metric).",
    )
    p.add_argument("--data-dir", default=default_dir, metavar="DIR",
                   help="directory containing the Parquet files (default: $PROMDUCK_DATA_DIR, "
                        "else ./data)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--date", type=day_arg, metavar="YYYY-MM-DD", help="query one day")
    when.add_argument("--last-days", type=days_arg, metavar="N",
                      help="query the N complete days before today (UTC); today is not included")
    p.add_argument("--api-proxy", action="append", metavar="NAME",
                   help="only this API proxy (repeat the option for several)")
    p.add_argument("--metric", action="append", metavar="NAME",
                   help="only this metric, e.g. request_count (repeat the option for several)")
    p.add_argument("--output", metavar="FILE",
                   help="save the selected rows to FILE as CSV (columns: " + ", ".join(CSV_COLUMNS) + ")")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------
# formatting


def fmt_num(v) -> str:
    if v is None:
        return ""
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.3f}".rstrip("0").rstrip(".")


def iso_utc(ms: int) -> str:
    t = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}"
    return text + "Z"


def labels_text(labels) -> str:
    return ", ".join(f"{k}={v}" for k, v in (labels or {}).items())


def table(headers, rows, numeric=()) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(vals):
        return "  ".join(v.rjust(w) if i in numeric else v.ljust(w)
                         for i, (v, w) in enumerate(zip(vals, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def utc_today() -> date:
    """Today in UTC, read once per run: the query and the description use the same days.
    ``PROMDUCK_NOW`` (RFC 3339), the collector's and the extension's testing aid, fixes it."""
    fixed = os.environ.get("PROMDUCK_NOW")
    if fixed:
        try:
            return datetime.fromisoformat(fixed).astimezone(timezone.utc).date()
        except ValueError:
            raise UserError(f"PROMDUCK_NOW={fixed!r} is not an RFC 3339 time") from None
    return datetime.now(timezone.utc).date()


def last_days_window(n: int) -> tuple[date, date]:
    """The N complete days before today (UTC)."""
    today = utc_today()
    return today - timedelta(days=n), today - timedelta(days=1)


def describe(args, window=None) -> str:
    if args.date:
        days = f"day {args.date}"
    elif window:
        days = f"days {window[0]}..{window[1]}"
    else:
        days = "all days"
    proxies = ", ".join(args.api_proxy) if args.api_proxy else "all"
    metrics = ", ".join(args.metric) if args.metric else "all"
    return f"{days}; API proxies: {proxies}; metrics: {metrics}"


# ---------------------------------------------------------------------------


def connect(extension: Path):
    try:
        import duckdb
    except ImportError:
        raise UserError("the duckdb Python package is not installed (pip install duckdb)") from None
    if not extension.is_file():
        raise UserError(f"promduck extension not found: {extension} (run `make build`, "
                        "or set PROMDUCK_EXTENSION to the .duckdb_extension file)")
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    if extension == DEFAULT_EXTENSION:
        # DuckDB 1.2's Linux wheels call their platform linux_amd64_gcc4 and refuse the file
        # stamped linux_amd64: `make build` stamps a copy per such platform.
        platform = con.execute("PRAGMA platform").fetchone()[0]
        own = DEFAULT_EXTENSION.parent / platform / DEFAULT_EXTENSION.name
        if own.is_file():
            extension = own
    try:
        con.load_extension(str(extension))
    except duckdb.Error as e:
        raise UserError(f"cannot load the promduck extension {extension}: {first_line(e)}") from None
    return con, duckdb.Error


def first_line(e) -> str:
    lines = [l for l in str(e).splitlines() if l.strip()]
    return lines[0] if lines else type(e).__name__


# (option, what, names in the selection, names anywhere in the data directory)
NAME_CHECKS = [
    ("api_proxy", "API proxy",
     "SELECT DISTINCT api_proxy FROM selected",
     "SELECT DISTINCT api_proxy FROM prom_metrics(data_dir := $d) ORDER BY 1"),
    ("metric", "metric",
     "SELECT DISTINCT metric_name FROM selected",
     "SELECT DISTINCT metric_name FROM prom_metrics(data_dir := $d) ORDER BY 1"),
]


def check_names(con, args, data_dir: str) -> None:
    """Named proxies or metrics without rows: an error if the data directory has
    never heard of them (and say which it knows), fine if only the days miss."""
    for option, what, selected_sql, known_sql in NAME_CHECKS:
        wanted = getattr(args, option)
        if not wanted:
            continue
        present = {r[0] for r in con.execute(selected_sql).fetchall()}
        absent = [w for w in wanted if w not in present]
        if not absent:
            continue
        known = [r[0] for r in con.execute(known_sql, {"d": data_dir}).fetchall()]
        unknown = [w for w in absent if w not in known]
        if unknown:
            names = ", ".join(repr(u) for u in unknown)
            raise UserError(f"unknown {what} {names} in {data_dir}; "
                            f"{what} names there: {', '.join(known) or '(none)'}")


def write_csv(con, path: str) -> int:
    rows = con.execute("SELECT ts_ms, date, api_proxy, metric_name, value, labels FROM selected").fetchall()
    try:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for ts_ms, day, proxy, metric, value, labels in rows:
                w.writerow([iso_utc(ts_ms), day.isoformat(), proxy, metric, repr(value),
                            json.dumps(labels or {}, ensure_ascii=False)])
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return len(rows)


def run(args) -> int:
    data_dir = args.data_dir
    extension = Path(os.environ.get("PROMDUCK_EXTENSION") or DEFAULT_EXTENSION)
    # A bucket (s3://…) is checked by prom_metrics itself, as any archive it reads.
    if "://" not in data_dir and not os.path.exists(data_dir):
        raise UserError(f"data directory not found: {data_dir} (use --data-dir or set PROMDUCK_DATA_DIR)")
    if "://" not in data_dir and not os.path.isdir(data_dir):
        raise UserError(f"not a directory: {data_dir} (--data-dir must name the collector's output directory)")
    con, db_error = connect(extension)
    window = last_days_window(args.last_days) if args.last_days else None
    params = {
        "data_dir": data_dir,
        "date": args.date.isoformat() if args.date else None,
        "start_date": window[0].isoformat() if window else None,
        "end_date": window[1].isoformat() if window else None,
        "proxy": args.api_proxy,
        "metric": args.metric,
    }
    try:
        con.execute(SELECT_SQL, params)
        check_names(con, args, data_dir)
        n = con.execute("SELECT count(*) FROM selected").fetchone()[0]
        written = write_csv(con, args.output) if args.output else None
        if n == 0:
            print(f"No data found in {data_dir} for {describe(args, window)}.", file=sys.stderr)
            if written is not None:
                print(f"Wrote only the CSV header to {args.output}.", file=sys.stderr)
            return 1
        print(f"Found {n} rows in {data_dir} ({describe(args, window)}).")

        per_proxy = con.execute(PER_PROXY_SQL).fetchall()
        print("\nTotals per API proxy and metric")
        print(table(["api_proxy", "metric_name", "rows", "total", "average", "min", "max"],
                    [(p, m, r, fmt_num(t), fmt_num(a), fmt_num(lo), fmt_num(hi))
                     for p, m, r, t, a, lo, hi in per_proxy], numeric={2, 3, 4, 5, 6}))

        per_day = con.execute(PER_DAY_SQL).fetchall()
        print("\nTotals per day")
        print(table(["date", "api_proxy", "metric_name", "rows", "total", "max"],
                    [(d.isoformat(), p, m, r, fmt_num(t), fmt_num(hi)) for d, p, m, r, t, hi in per_day],
                    numeric={3, 4, 5}))

        sample = con.execute("SELECT ts_ms, date, api_proxy, metric_name, value, labels "
                             "FROM selected LIMIT $n", {"n": SAMPLE_ROWS}).fetchall()
        title = f"First {len(sample)} of {n} rows" if n > len(sample) else f"All {n} rows"
        print(f"\n{title}")
        print(table(["timestamp (UTC)", "date", "api_proxy", "metric_name", "value", "labels"],
                    [(iso_utc(ts).replace("T", " ").rstrip("Z"), d.isoformat(), p, m, fmt_num(v),
                      labels_text(lb)) for ts, d, p, m, v, lb in sample], numeric={4}))
        if written is not None:
            print(f"\nSaved {written} rows to {args.output}")
    except db_error as e:
        raise UserError(first_line(e)) from None
    finally:
        con.close()
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): what it wanted was printed. Point stdout at
        # /dev/null so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
