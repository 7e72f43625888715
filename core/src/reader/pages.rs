//! The column chunks of a file read synchronously (a local file, an object fetched
//! whole), with one zstd decompression context per thread.
//!
//! parquet's zstd codec creates a compression *and* a decompression context for every
//! column chunk it opens, and a partition of a few hundred rows is a handful of tiny
//! chunks: on such files the two contexts were 30–40 % of a scan's CPU (the allocation
//! and initialisation of ~100 KiB per chunk; BENCHMARKS.md, the dashboard section).
//! Here a zstd chunk is opened as if it were uncompressed, so parquet hands over each
//! page's bytes as stored, and [`ZstdPages`] decompresses them with the context this
//! thread keeps, each to exactly the size its page header gives, as parquet's codec
//! checks it ([`Headers`] reads those headers, which parquet does not hand on). Other
//! codecs are opened by parquet as before.

use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReader, RowGroups};
use parquet::arrow::{parquet_to_arrow_field_levels, ProjectionMask};
use parquet::basic::Compression;
use parquet::column::page::{Page, PageIterator, PageMetadata, PageReader};
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use parquet::file::reader::ChunkReader;
use parquet::file::serialized_reader::SerializedPageReader;
use std::cell::RefCell;
use std::sync::Arc;

/// A batch reader over `input` (whose footer is `meta`): the columns of `mask`, the
/// row groups `row_groups` (all when `None`), `batch_rows` rows at a time.
pub(crate) fn batch_reader<T: ChunkReader + 'static>(
    input: T,
    meta: &ArrowReaderMetadata,
    mask: ProjectionMask,
    row_groups: Option<Vec<usize>>,
    batch_rows: usize,
) -> Result<ParquetRecordBatchReader> {
    let metadata = meta.metadata().clone();
    let levels =
        parquet_to_arrow_field_levels(metadata.file_metadata().schema_descr(), mask, None)?;
    let row_groups = row_groups.unwrap_or_else(|| (0..metadata.num_row_groups()).collect());
    let groups = WholeFile {
        input: Arc::new(input),
        metadata,
        row_groups,
    };
    // No buffer larger than the rows there are (as parquet's own builder does).
    let batch_rows = batch_rows.min(groups.num_rows()).max(1);
    ParquetRecordBatchReader::try_new_with_row_groups(&levels, &groups, batch_rows, None)
}

/// The selected row groups of one file.
struct WholeFile<T> {
    input: Arc<T>,
    metadata: Arc<ParquetMetaData>,
    row_groups: Vec<usize>,
}

impl<T: ChunkReader + 'static> RowGroups for WholeFile<T> {
    fn num_rows(&self) -> usize {
        let groups = self.metadata.row_groups();
        self.row_groups
            .iter()
            .map(|&i| usize::try_from(groups[i].num_rows()).unwrap_or(0))
            .sum()
    }

    fn column_chunks(&self, column: usize) -> Result<Box<dyn PageIterator>> {
        Ok(Box::new(Chunks {
            input: self.input.clone(),
            metadata: self.metadata.clone(),
            column,
            row_groups: self.row_groups.clone().into_iter(),
        }))
    }

    fn row_groups(&self) -> Box<dyn Iterator<Item = &RowGroupMetaData> + '_> {
        Box::new(self.row_groups.iter().map(|&i| self.metadata.row_group(i)))
    }

    fn metadata(&self) -> &ParquetMetaData {
        &self.metadata
    }
}

/// One column's chunks, a row group after another.
struct Chunks<T> {
    input: Arc<T>,
    metadata: Arc<ParquetMetaData>,
    column: usize,
    row_groups: std::vec::IntoIter<usize>,
}

impl<T: ChunkReader + 'static> Chunks<T> {
    fn open(&self, group: usize) -> Result<Box<dyn PageReader>> {
        let rg = self.metadata.row_group(group);
        let chunk = rg.column(self.column);
        let rows = usize::try_from(rg.num_rows())
            .map_err(|_| ParquetError::General(format!("row group {group}: negative row count")))?;
        // The page index is never loaded by promduck's readers: no page locations.
        if matches!(chunk.compression(), Compression::ZSTD(_)) {
            let stored = chunk
                .clone()
                .into_builder()
                .set_compression(Compression::UNCOMPRESSED)
                .build()?;
            let pages = SerializedPageReader::new(self.input.clone(), &stored, rows, None)?;
            Ok(Box::new(ZstdPages {
                pages,
                headers: Headers {
                    input: self.input.clone(),
                    at: chunk.byte_range().0,
                },
                deferred: None,
            }))
        } else {
            Ok(Box::new(SerializedPageReader::new(
                self.input.clone(),
                chunk,
                rows,
                None,
            )?))
        }
    }
}

impl<T: ChunkReader + 'static> Iterator for Chunks<T> {
    type Item = Result<Box<dyn PageReader>>;

    fn next(&mut self) -> Option<Self::Item> {
        let group = self.row_groups.next()?;
        Some(self.open(group))
    }
}

impl<T: ChunkReader + 'static> PageIterator for Chunks<T> {}

/// The pages of a zstd chunk opened as stored, decompressed as they are handed on.
///
/// Each page's uncompressed size is read from its header, as parquet's own reader reads it,
/// and the decompressed page must have exactly that size: parquet does not hand the header on
/// with the page, so [`Headers`] walks the chunk's page headers alongside it.
struct ZstdPages<P, T> {
    pages: P,
    headers: Headers<T>,
    /// The uncompressed size of a dictionary page skipped and kept back by `pages`.
    deferred: Option<usize>,
}

impl<P: PageReader, T: ChunkReader> PageReader for ZstdPages<P, T> {
    fn get_next_page(&mut self) -> Result<Option<Page>> {
        let Some(page) = self.pages.get_next_page()? else {
            return Ok(None);
        };
        let header = self.headers.next()?;
        if header.compressed != page.buffer().len() {
            return Err(ParquetError::General(format!(
                "page header at byte {} says {} bytes, the page has {}",
                header.at,
                header.compressed,
                page.buffer().len()
            )));
        }
        decompress_page(page, header.uncompressed).map(Some)
    }

    fn peek_next_page(&mut self) -> Result<Option<PageMetadata>> {
        self.pages.peek_next_page()
    }

    fn skip_next_page(&mut self) -> Result<()> {
        #[cfg(test)]
        tests::SKIPPED.with(|n| n.set(n.get() + 1));
        if self.pages.peek_next_page()?.is_none() {
            return self.pages.skip_next_page();
        }
        self.pages.skip_next_page()?;
        let header = self.headers.next()?;
        if header.dictionary {
            self.deferred = Some(header.uncompressed);
        }
        Ok(())
    }

    fn supports_deferred_dictionary(&self) -> bool {
        self.pages.supports_deferred_dictionary()
    }

    fn take_deferred_dictionary(&mut self) -> Result<Option<Page>> {
        let Some(page) = self.pages.take_deferred_dictionary()? else {
            return Ok(None);
        };
        let size = self.deferred.take().ok_or_else(|| {
            ParquetError::General("a dictionary page handed back that was never skipped".into())
        })?;
        decompress_page(page, size).map(Some)
    }

    fn at_record_boundary(&mut self) -> Result<bool> {
        self.pages.at_record_boundary()
    }
}

impl<P: PageReader, T: ChunkReader> Iterator for ZstdPages<P, T> {
    type Item = Result<Page>;

    fn next(&mut self) -> Option<Self::Item> {
        self.get_next_page().transpose()
    }
}

/// A page as parquet's zstd codec would have handed it on: its compressed bytes
/// decompressed to exactly `size` bytes, its header's uncompressed size (for a v2 data
/// page: the bytes after its levels, which are stored uncompressed, and only when the
/// page says it is compressed).
fn decompress_page(mut page: Page, size: usize) -> Result<Page> {
    match &mut page {
        Page::DictionaryPage { buf, .. } | Page::DataPage { buf, .. } => {
            *buf = unzstd(buf, size)?;
        }
        Page::DataPageV2 {
            buf,
            def_levels_byte_len,
            rep_levels_byte_len,
            is_compressed,
            ..
        } if *is_compressed => {
            let levels = *def_levels_byte_len as usize + *rep_levels_byte_len as usize;
            if levels > buf.len() || levels > size {
                return Err(ParquetError::General(format!(
                    "data page v2: levels of {levels} bytes in a page of {} ({size} uncompressed)",
                    buf.len()
                )));
            }
            let values = unzstd(&buf[levels..], size - levels)?;
            let mut out = Vec::with_capacity(size);
            out.extend_from_slice(&buf[..levels]);
            out.extend_from_slice(&values);
            *buf = Bytes::from(out);
            *is_compressed = false;
        }
        Page::DataPageV2 { .. } => {}
    }
    Ok(page)
}

thread_local! {
    /// This thread's decompression context, made on its first zstd page.
    static CONTEXT: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Decompresses a zstd page that must hold exactly `size` bytes (a page of several
/// frames, or of frames that do not record their size, included).
fn unzstd(input: &[u8], size: usize) -> Result<Bytes> {
    #[cfg(test)]
    tests::UNZSTD_CALLS.with(|n| n.set(n.get() + 1));
    // A page whose values are all null stores nothing to decompress (as parquet reads it).
    if size == 0 {
        return Ok(Bytes::new());
    }
    let out = CONTEXT
        .with(|c| -> std::io::Result<Vec<u8>> {
            let mut c = c.borrow_mut();
            let context = match c.as_mut() {
                Some(context) => context,
                None => c.insert(zstd::bulk::Decompressor::new()?),
            };
            context.decompress(input, size)
        })
        .map_err(|e| ParquetError::General(format!("zstd page: {e}")))?;
    if out.len() != size {
        return Err(ParquetError::General(format!(
            "zstd page: {} bytes decompressed, its header says {size}",
            out.len()
        )));
    }
    Ok(Bytes::from(out))
}

/// What one page header says.
struct Header {
    /// Where it starts in the file.
    at: u64,
    dictionary: bool,
    uncompressed: usize,
    compressed: usize,
}

/// The page headers of one column chunk, read in turn from its start.
struct Headers<T> {
    input: Arc<T>,
    at: u64,
}

impl<T: ChunkReader> Headers<T> {
    fn next(&mut self) -> Result<Header> {
        let at = self.at;
        let mut r = Compact {
            r: self.input.get_read(at)?,
            read: 0,
        };
        let (mut kind, mut uncompressed, mut compressed) = (None, None, None);
        r.read_struct(0, &mut |r, id, ty| {
            match (id, ty) {
                (1, 5) => kind = Some(r.i32()?),
                (2, 5) => uncompressed = Some(r.i32()?),
                (3, 5) => compressed = Some(r.i32()?),
                _ => r.skip(ty, 1)?,
            }
            Ok(())
        })?;
        let size = |v: Option<i32>, what: &str| {
            v.and_then(|v| usize::try_from(v).ok()).ok_or_else(|| {
                ParquetError::General(format!("page header at byte {at}: no valid {what}"))
            })
        };
        let header = Header {
            at,
            // PageType::DICTIONARY_PAGE
            dictionary: kind == Some(2),
            uncompressed: size(uncompressed, "uncompressed size")?,
            compressed: size(compressed, "compressed size")?,
        };
        self.at = at + r.read + header.compressed as u64;
        Ok(header)
    }
}

/// Just enough of Thrift's compact protocol to read a page header's sizes and skip the
/// rest of it (parquet's own reader of it is not public).
struct Compact<R> {
    r: R,
    read: u64,
}

impl<R: std::io::Read> Compact<R> {
    fn byte(&mut self) -> Result<u8> {
        let mut b = [0u8];
        self.r
            .read_exact(&mut b)
            .map_err(|e| ParquetError::General(format!("page header: {e}")))?;
        self.read += 1;
        Ok(b[0])
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ParquetError::General(
            "page header: a varint too long".into(),
        ))
    }

    fn i32(&mut self) -> Result<i32> {
        let v = self.varint()? as u32;
        Ok((v >> 1) as i32 ^ -((v & 1) as i32))
    }

    /// Reads a struct's fields, handing each (id, type) to `field`, which reads or skips it.
    fn read_struct(
        &mut self,
        depth: u32,
        field: &mut dyn FnMut(&mut Self, i16, u8) -> Result<()>,
    ) -> Result<()> {
        if depth > 16 {
            return Err(ParquetError::General("page header: nested too deep".into()));
        }
        let mut id: i16 = 0;
        loop {
            let b = self.byte()?;
            // Type 0 is the end of the struct whatever the rest of the byte (as parquet reads it).
            if b & 0x0f == 0 {
                return Ok(());
            }
            let ty = b & 0x0f;
            id = match b >> 4 {
                0 => {
                    let v = self.varint()? as u16;
                    (v >> 1) as i16 ^ -((v & 1) as i16)
                }
                delta => id.wrapping_add(i16::from(delta)),
            };
            field(self, id, ty)?;
        }
    }

    /// Skips a value of compact type `ty` (a field's: booleans carry no bytes).
    fn skip(&mut self, ty: u8, depth: u32) -> Result<()> {
        match ty {
            1 | 2 => {}
            3 => {
                self.byte()?;
            }
            4..=6 => {
                self.varint()?;
            }
            7 => {
                for _ in 0..8 {
                    self.byte()?;
                }
            }
            8 => {
                let n = self.varint()?;
                let copied = std::io::copy(
                    &mut std::io::Read::take(&mut self.r, n),
                    &mut std::io::sink(),
                )
                .map_err(|e| ParquetError::General(format!("page header: {e}")))?;
                if copied != n {
                    return Err(ParquetError::General("page header: cut short".into()));
                }
                self.read += n;
            }
            9 | 10 => {
                let h = self.byte()?;
                let mut n = u64::from(h >> 4);
                if n == 15 {
                    n = self.varint()?;
                }
                for _ in 0..n {
                    self.skip_element(h & 0x0f, depth)?;
                }
            }
            11 => {
                let n = self.varint()?;
                if n > 0 {
                    let kv = self.byte()?;
                    for _ in 0..n {
                        self.skip_element(kv >> 4, depth)?;
                        self.skip_element(kv & 0x0f, depth)?;
                    }
                }
            }
            12 => self.read_struct(depth + 1, &mut |r, _, ty| r.skip(ty, depth + 1))?,
            13 => {
                for _ in 0..16 {
                    self.byte()?;
                }
            }
            _ => {
                return Err(ParquetError::General(format!(
                    "page header: unknown Thrift type {ty}"
                )))
            }
        }
        Ok(())
    }

    /// Skips an element of a list, set or map (booleans take a byte there).
    fn skip_element(&mut self, ty: u8, depth: u32) -> Result<()> {
        if ty == 1 || ty == 2 {
            self.byte().map(drop)
        } else {
            self.skip(ty, depth)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use parquet::arrow::ArrowWriter;
    use parquet::basic::ZstdLevel;
    use parquet::file::properties::{WriterProperties, WriterVersion};

    thread_local! {
        /// Pages this thread decompressed here (not by parquet's codec).
        pub(super) static UNZSTD_CALLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// zstd pages this thread skipped (a row selection).
        pub(super) static SKIPPED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn sample(rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new("value", DataType::Float64, true),
        ]));
        let names: StringArray = (0..rows)
            .map(|i| (i % 7 != 3).then(|| format!("series-{}", i % 13)))
            .collect();
        let n: Int64Array = (0..rows as i64).map(|i| i * 1_000 - 7).collect();
        let value: Float64Array = (0..rows)
            .map(|i| (i % 5 != 0).then_some(i as f64 / 3.0))
            .collect();
        RecordBatch::try_new(schema, vec![Arc::new(names), Arc::new(n), Arc::new(value)]).unwrap()
    }

    fn write(batch: &RecordBatch, props: WriterProperties) -> Bytes {
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        Bytes::from(out)
    }

    fn read(file: Bytes, columns: &[usize], groups: Option<Vec<usize>>) -> Vec<RecordBatch> {
        let meta = ArrowReaderMetadata::load(&file, Default::default()).unwrap();
        let mask = ProjectionMask::roots(
            meta.metadata().file_metadata().schema_descr(),
            columns.to_vec(),
        );
        batch_reader(file, &meta, mask, groups, 100)
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap()
    }

    fn concat(batches: &[RecordBatch]) -> RecordBatch {
        arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
    }

    /// zstd files of every page kind (dictionary, v1 and v2 data pages, several pages and
    /// row groups per chunk, nulls) read back exactly as written, as do other codecs.
    #[test]
    fn every_page_kind_reads_back_exactly() {
        let batch = sample(5_000);
        for version in [WriterVersion::PARQUET_1_0, WriterVersion::PARQUET_2_0] {
            for compression in [
                Compression::ZSTD(ZstdLevel::default()),
                Compression::SNAPPY,
                Compression::UNCOMPRESSED,
            ] {
                let props = WriterProperties::builder()
                    .set_writer_version(version)
                    .set_compression(compression)
                    .set_data_page_row_count_limit(300)
                    .set_write_batch_size(300)
                    .set_max_row_group_row_count(Some(2_000))
                    .build();
                let file = write(&batch, props);
                let what = format!("{version:?} {compression:?}");
                let meta = ArrowReaderMetadata::load(&file, Default::default()).unwrap();
                assert_eq!(meta.metadata().num_row_groups(), 3, "{what}");
                assert_eq!(
                    concat(&read(file.clone(), &[0, 1, 2], None)),
                    batch,
                    "{what}"
                );
                // A row selection skips whole pages (v2 pages say their rows), a dictionary
                // page among them, and reads the rest exactly.
                {
                    use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
                    let md = meta.metadata().clone();
                    let levels = parquet_to_arrow_field_levels(
                        md.file_metadata().schema_descr(),
                        ProjectionMask::all(),
                        None,
                    )
                    .unwrap();
                    let groups = WholeFile {
                        input: Arc::new(file.clone()),
                        metadata: md,
                        row_groups: vec![0, 1, 2],
                    };
                    let selection = RowSelection::from(vec![
                        RowSelector::skip(1_000),
                        RowSelector::select(450),
                        RowSelector::skip(2_150),
                        RowSelector::select(1_400),
                    ]);
                    let skipped = SKIPPED.with(|n| n.get());
                    let got: Vec<RecordBatch> = ParquetRecordBatchReader::try_new_with_row_groups(
                        &levels,
                        &groups,
                        100,
                        Some(selection),
                    )
                    .unwrap()
                    .collect::<std::result::Result<_, _>>()
                    .unwrap();
                    let want = arrow::compute::concat_batches(
                        &batch.schema(),
                        &[batch.slice(1_000, 450), batch.slice(3_600, 1_400)],
                    )
                    .unwrap();
                    assert_eq!(concat(&got), want, "{what}");
                    if matches!(compression, Compression::ZSTD(_))
                        && version == WriterVersion::PARQUET_2_0
                    {
                        let n = SKIPPED.with(|n| n.get()) - skipped;
                        assert!(n > 0, "{what}: no page skipped");
                    }
                }
                // Projection and row groups: the second group's `value` alone.
                let got = concat(&read(file, &[2], Some(vec![1])));
                assert_eq!(got.num_columns(), 1, "{what}");
                assert_eq!(
                    got.column(0).as_ref(),
                    batch.column(2).slice(2_000, 2_000).as_ref(),
                    "{what}"
                );
            }
        }
    }

    /// Pages decompress to exactly their header's size, whatever their frames record
    /// (a size or none, one frame or several); anything else is an error.
    #[test]
    fn pages_decompress_to_exactly_their_size() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let n = data.len();
        let sized = zstd::bulk::compress(&data, 3).unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&sized).unwrap(),
            Some(n as u64)
        );
        assert_eq!(unzstd(&sized, n).unwrap(), data);
        // A stream without a pledged size records none.
        let mut unsized_ = Vec::new();
        {
            let mut e = zstd::stream::Encoder::new(&mut unsized_, 3).unwrap();
            std::io::Write::write_all(&mut e, &data).unwrap();
            e.finish().unwrap();
        }
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&unsized_).unwrap(),
            None
        );
        assert_eq!(unzstd(&unsized_, n).unwrap(), data);
        let mut two = sized.clone();
        two.extend_from_slice(&unsized_);
        assert_eq!(
            unzstd(&two, 2 * n).unwrap(),
            [data.clone(), data.clone()].concat()
        );
        // A page of no values stores nothing.
        assert_eq!(unzstd(&[], 0).unwrap(), Bytes::new());
        // The header's size is checked both ways, frames recording one or not.
        for frame in [&sized, &unsized_] {
            let short = unzstd(frame, n + 1).unwrap_err().to_string();
            assert!(
                short.contains(&format!(
                    "{n} bytes decompressed, its header says {}",
                    n + 1
                )) || short.contains("zstd page"),
                "{short}"
            );
            assert!(unzstd(frame, n - 1).is_err());
        }
        // Truncated, corrupted.
        assert!(unzstd(&sized[..sized.len() / 2], n).is_err());
        let mut bad = sized.clone();
        for b in &mut bad[20..60] {
            *b ^= 0x5a;
        }
        assert!(unzstd(&bad, n).is_err());
    }

    /// A page header's sizes are read as Thrift's compact protocol writes them, past fields
    /// of every type (statistics, lists, maps, nested structs, long field ids).
    #[test]
    fn page_headers_are_read_past_every_field_type() {
        fn varint(out: &mut Vec<u8>, mut v: u64) {
            while v >= 0x80 {
                out.push(v as u8 | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
        let zz = |v: i64| ((v << 1) ^ (v >> 63)) as u64;
        let mut h = Vec::new();
        h.push(0x15); // field 1, i32: type
        varint(&mut h, zz(2));
        h.push(0x15); // field 2, i32: uncompressed size
        varint(&mut h, zz(123_456));
        h.push(0x15); // field 3, i32: compressed size
        varint(&mut h, zz(7));
        h.push(0x15); // field 4, i32: crc
        varint(&mut h, zz(-5));
        h.push(0x1c); // field 5, struct
        h.push(0x18); // binary
        varint(&mut h, 3);
        h.extend_from_slice(b"abc");
        h.push(0x11); // bool true
        h.push(0x17); // double
        h.extend_from_slice(&1.5f64.to_le_bytes());
        h.push(0x19); // list of 3 bools
        h.push(0x31);
        h.extend_from_slice(&[1, 2, 1]);
        h.push(0x1b); // map of 1 i32 -> binary
        varint(&mut h, 1);
        h.push(0x58);
        varint(&mut h, zz(9));
        varint(&mut h, 2);
        h.extend_from_slice(b"xy");
        h.push(0x1c); // nested struct with a long field id
        h.push(0x06);
        varint(&mut h, zz(300));
        varint(&mut h, zz(-1));
        h.push(0);
        h.push(0x19); // list of 17 i16 (long size form)
        h.push(0xf4);
        varint(&mut h, 17);
        for i in 0..17 {
            varint(&mut h, zz(i));
        }
        h.push(0x13); // byte
        h.push(0xff);
        h.push(0); // end of field 5
        h.push(0); // end of the header
        let header_len = h.len() as u64;
        h.extend_from_slice(b"PAGEBYTE"); // 7 page bytes and the next header's start
        let mut headers = Headers {
            input: Arc::new(Bytes::from(h.clone())),
            at: 0,
        };
        let got = headers.next().unwrap();
        assert_eq!(
            (got.at, got.dictionary, got.uncompressed, got.compressed),
            (0, true, 123_456, 7)
        );
        assert_eq!(headers.at, header_len + 7);
        // Cut anywhere, or without a size, it is an error.
        for cut in 0..header_len as usize {
            let mut headers = Headers {
                input: Arc::new(Bytes::from(h[..cut].to_vec())),
                at: 0,
            };
            assert!(headers.next().is_err(), "cut at {cut}");
        }
        let mut headers = Headers {
            input: Arc::new(Bytes::from_static(&[0x15, 0x04, 0x00])),
            at: 0,
        };
        let e = headers.next().err().unwrap().to_string();
        assert!(e.contains("no valid uncompressed size"), "{e}");
    }

    /// Damaged bytes anywhere in a zstd file's pages: read here, they give what parquet's
    /// own reader gives (the same rows, or an error), and never a panic parquet's reader
    /// would not have had (arrow's decoders themselves panic on some damage, which the
    /// extension's callbacks contain).
    #[test]
    fn damaged_zstd_pages_read_as_parquet_reads_them() {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        type Read = std::thread::Result<std::result::Result<Vec<RecordBatch>, String>>;
        fn ours(bytes: &Bytes, meta: &ArrowReaderMetadata) -> Read {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                batch_reader(bytes.clone(), meta, ProjectionMask::all(), None, 700)
                    .map_err(|e| e.to_string())?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())
            }))
        }
        fn parquets(bytes: &Bytes) -> Read {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                    .and_then(|b| b.with_batch_size(700).build())
                    .map_err(|e| e.to_string())?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())
            }))
        }
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let batch = sample(3_000);
        let mut seen = [0usize; 5];
        let mut failures: Vec<String> = Vec::new();
        for version in [WriterVersion::PARQUET_1_0, WriterVersion::PARQUET_2_0] {
            let props = WriterProperties::builder()
                .set_writer_version(version)
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .set_data_page_row_count_limit(500)
                .set_write_batch_size(500)
                .build();
            let file = write(&batch, props);
            let meta = ArrowReaderMetadata::load(&file, Default::default()).unwrap();
            // Only the pages are damaged (the footer still parses).
            let pages_end = meta.metadata().row_group(0).columns().iter().map(|c| {
                let (start, len) = c.byte_range();
                start + len
            });
            let pages_end = pages_end.max().unwrap() as usize;
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ pages_end as u64;
            for _ in 0..1_500 {
                let mut bytes = file.to_vec();
                for _ in 0..1 + seed % 4 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let at = 4 + (seed as usize % (pages_end - 4));
                    bytes[at] ^= (seed >> 32) as u8 | 1;
                }
                let bytes = Bytes::from(bytes);
                let (a, b) = (ours(&bytes, &meta), parquets(&bytes));
                let case = format!("{version:?}, seed {seed:#x}");
                match (&a, &b) {
                    (Ok(Ok(x)), Ok(Ok(y))) => {
                        assert_eq!(x, y, "{case}");
                        seen[0] += 1
                    }
                    (Ok(Err(_)), Ok(Err(_))) => seen[1] += 1,
                    (Err(_), Err(_)) => seen[2] += 1,
                    // Where parquet's reader panics, ours may stop at an error first.
                    (Ok(Err(_)), Err(_)) => seen[3] += 1,
                    // A damaged page header that parquet's reader reads past (it reads some
                    // fields without checking their types); ours refuses it.
                    (Ok(Err(e)), Ok(Ok(_))) if e.contains("page header") => seen[4] += 1,
                    _ => failures.push(format!(
                        "{case}: ours {:?}, parquet's {:?}",
                        a.map(|r| r.map(|v| v.len())),
                        b.map(|r| r.map(|v| v.len()))
                    )),
                }
            }
        }
        std::panic::set_hook(hook);
        assert!(
            failures.is_empty(),
            "{} of 3,000: {:#?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        // The damage reached every kind of outcome.
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
        eprintln!(
            "same rows {}, both errors {}, both panicked {}, ours an error where parquet's \
             panicked {}, ours an error where parquet's read a damaged header {}",
            seen[0], seen[1], seen[2], seen[3], seen[4]
        );
    }
}
