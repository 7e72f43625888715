//! The column chunks of a file read in one piece (a local file, an object fetched
//! whole), with one zstd decompression context per thread.
//!
//! parquet's zstd codec creates a compression *and* a decompression context for every
//! column chunk it opens, and a partition of a few hundred rows is a handful of tiny
//! chunks: on such files the two contexts were 30–40 % of a scan's CPU (the allocation
//! and initialisation of ~100 KiB per chunk; BENCHMARKS.md, the dashboard section).
//! Here a zstd chunk is opened as if it were uncompressed, so parquet hands over each
//! page's bytes as stored, and [`ZstdPages`] decompresses them with the context this
//! thread keeps. Other codecs are opened by parquet as before.

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
            Ok(Box::new(ZstdPages(pages)))
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
struct ZstdPages<P>(P);

impl<P: PageReader> PageReader for ZstdPages<P> {
    fn get_next_page(&mut self) -> Result<Option<Page>> {
        self.0.get_next_page()?.map(decompress_page).transpose()
    }

    fn peek_next_page(&mut self) -> Result<Option<PageMetadata>> {
        self.0.peek_next_page()
    }

    fn skip_next_page(&mut self) -> Result<()> {
        self.0.skip_next_page()
    }

    fn supports_deferred_dictionary(&self) -> bool {
        self.0.supports_deferred_dictionary()
    }

    fn take_deferred_dictionary(&mut self) -> Result<Option<Page>> {
        self.0
            .take_deferred_dictionary()?
            .map(decompress_page)
            .transpose()
    }

    fn at_record_boundary(&mut self) -> Result<bool> {
        self.0.at_record_boundary()
    }
}

impl<P: PageReader> Iterator for ZstdPages<P> {
    type Item = Result<Page>;

    fn next(&mut self) -> Option<Self::Item> {
        self.get_next_page().transpose()
    }
}

/// A page as parquet's zstd codec would have handed it on: its compressed bytes
/// decompressed (for a v2 data page, the bytes after its levels, which are stored
/// uncompressed, and only when the page says it is compressed).
fn decompress_page(page: Page) -> Result<Page> {
    Ok(match page {
        Page::DictionaryPage {
            buf,
            num_values,
            encoding,
            is_sorted,
        } => Page::DictionaryPage {
            buf: unzstd(&buf)?,
            num_values,
            encoding,
            is_sorted,
        },
        Page::DataPage {
            buf,
            num_values,
            encoding,
            def_level_encoding,
            rep_level_encoding,
            statistics,
        } => Page::DataPage {
            buf: unzstd(&buf)?,
            num_values,
            encoding,
            def_level_encoding,
            rep_level_encoding,
            statistics,
        },
        Page::DataPageV2 {
            buf,
            num_values,
            encoding,
            num_nulls,
            num_rows,
            def_levels_byte_len,
            rep_levels_byte_len,
            is_compressed: true,
            statistics,
        } => {
            let levels = def_levels_byte_len as usize + rep_levels_byte_len as usize;
            if levels > buf.len() {
                return Err(ParquetError::General(format!(
                    "data page v2: levels of {levels} bytes in a page of {}",
                    buf.len()
                )));
            }
            let values = unzstd(&buf[levels..])?;
            let mut out = Vec::with_capacity(levels + values.len());
            out.extend_from_slice(&buf[..levels]);
            out.extend_from_slice(&values);
            Page::DataPageV2 {
                buf: Bytes::from(out),
                num_values,
                encoding,
                num_nulls,
                num_rows,
                def_levels_byte_len,
                rep_levels_byte_len,
                is_compressed: false,
                statistics,
            }
        }
        uncompressed @ Page::DataPageV2 { .. } => uncompressed,
    })
}

thread_local! {
    /// This thread's decompression context, made on its first zstd page.
    static CONTEXT: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Decompresses a zstd page. Its size comes from the frame header (parquet's writers
/// and Arrow C++ record it); a frame without it, or a page of several frames, is
/// decoded by a stream (a context of its own: the rare case).
fn unzstd(input: &[u8]) -> Result<Bytes> {
    #[cfg(test)]
    tests::UNZSTD_CALLS.with(|n| n.set(n.get() + 1));
    // A page whose values are all null may store nothing (see parquet's own reader).
    if input.is_empty() {
        return Ok(Bytes::new());
    }
    let size = zstd::zstd_safe::get_frame_content_size(input)
        .ok()
        .flatten();
    if let Some(size) = size {
        // Page sizes are 32-bit in Parquet: a larger claim is a damaged header, not
        // a reason to allocate it.
        if size > i32::MAX as u64 {
            return Err(ParquetError::General(format!(
                "zstd page claims {size} bytes uncompressed"
            )));
        }
        let once = CONTEXT.with(|c| -> std::io::Result<Vec<u8>> {
            let mut c = c.borrow_mut();
            let context = match c.as_mut() {
                Some(context) => context,
                None => c.insert(zstd::bulk::Decompressor::new()?),
            };
            context.decompress(input, size as usize)
        });
        if let Ok(out) = once {
            if out.len() as u64 == size {
                return Ok(Bytes::from(out));
            }
        }
    }
    zstd::stream::decode_all(input)
        .map(Bytes::from)
        .map_err(|e| ParquetError::General(format!("zstd page: {e}")))
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

    /// Frames without a recorded size, or several frames in one page, are decoded too;
    /// damage is an error, never a panic or a huge allocation.
    #[test]
    fn frames_of_every_shape_decode_and_damage_is_an_error() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let sized = zstd::bulk::compress(&data, 3).unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&sized).unwrap(),
            Some(data.len() as u64)
        );
        assert_eq!(unzstd(&sized).unwrap(), data);
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
        assert_eq!(unzstd(&unsized_).unwrap(), data);
        // Two frames: the first's size is too small for both.
        let mut two = sized.clone();
        two.extend_from_slice(&sized);
        assert_eq!(unzstd(&two).unwrap(), [data.clone(), data.clone()].concat());
        assert_eq!(unzstd(&[]).unwrap(), Bytes::new());
        // Truncated, corrupted, and a header claiming 2^40 bytes.
        assert!(unzstd(&sized[..sized.len() / 2]).is_err());
        let mut bad = sized.clone();
        for b in &mut bad[20..60] {
            *b ^= 0x5a;
        }
        assert!(unzstd(&bad).is_err());
        // A frame header (single segment, 8-byte size) claiming 2^40 bytes, one raw block.
        let mut huge = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
        huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
        huge.extend_from_slice(&[9, 0, 0, b'x']);
        let err = unzstd(&huge).unwrap_err().to_string();
        assert!(err.contains("claims 1099511627776 bytes"), "{err}");
    }
}
