-- The files to read for every row exactly once, also while a compaction runs: one listing
-- of data/*/*.parquet, where a month's file (data/YYYY-MM/YYYY-MM.parquet) replaces that
-- month's daily files (data/YYYY-MM-DD/*.parquet) if both are listed. Compaction makes the
-- month file visible first and removes the daily files only removeDailyAfter (30 s) later,
-- so a query that lists, then reads within that time, reads each row once. Then:
--   SELECT ... FROM read_parquet(getvariable('promduck_files'));
-- (DuckDB 1.1 or later.) The original Go tool's Hive files (data/year=*/month=*/day=*/app=*/)
-- are not in this listing: prom_metrics reads them (a daily file of the same day and proxy
-- shadows them, a month file shadows both), and compacting their month takes them in.
SET VARIABLE promduck_files = (
    WITH listed AS MATERIALIZED (
        SELECT file,
               regexp_extract(file, '(^|/)(\d{4}-\d{2})(-\d{2})?/[^/]*$', 2) AS month,
               regexp_matches(file, '(^|/)\d{4}-\d{2}/[^/]*$') AS is_month_file
        FROM glob('data/*/*.parquet')
    )
    SELECT list(file ORDER BY file) FROM listed
    WHERE is_month_file OR month NOT IN (SELECT month FROM listed WHERE is_month_file)
);
