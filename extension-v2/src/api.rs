//! A thin safe layer over the C API v2 calls this build makes: every call takes an
//! error slot, and a failed call becomes an `Err` with DuckDB's own text.

use libduckdb_sys::v2::*;
use std::ffi::c_void;
use std::ptr::null_mut;

pub use crate::params::BoxError;

/// A borrowed view of `s` for a call (DuckDB copies what it keeps).
pub fn view(s: &str) -> duckdb_v2_str {
    duckdb_v2_str {
        ptr: if s.is_empty() {
            std::ptr::null()
        } else {
            s.as_ptr().cast()
        },
        len: s.len() as idx_t,
    }
}

/// The text of a view DuckDB lent (copied).
///
/// # Safety
/// `s` points at `len` readable bytes (or `len` is 0).
pub unsafe fn owned(s: &duckdb_v2_str) -> String {
    if s.len == 0 || s.ptr.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr.cast::<u8>(), s.len as usize) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs one API call with an error slot of its own; a failure is `Err(text)`.
pub fn call(
    f: impl FnOnce(*mut duckdb_v2_error_info_handle) -> DUCKDB_V2_ERROR,
    what: &str,
) -> Result<(), BoxError> {
    let mut e: duckdb_v2_error_info_handle = null_mut();
    let rc = f(&mut e);
    if rc == DUCKDB_V2_ERROR::DUCKDB_V2_ERROR_NONE {
        return Ok(());
    }
    let mut text = String::new();
    if !e.is_null() {
        let mut s = duckdb_v2_str {
            ptr: std::ptr::null(),
            len: 0,
        };
        // SAFETY: `e` is the error info the failed call filled in; its text lives until
        // it is destroyed, after the copy.
        unsafe {
            duckdb_v2_error_info_get_text(e, &mut s);
            text = owned(&s);
            duckdb_v2_error_info_destroy(&mut e);
        }
    }
    Err(format!("promduck: {what} failed ({rc:?}): {text}").into())
}

/// Reports `message` through a callback's error slot (DuckDB raises it as the
/// statement's error).
///
/// # Safety
/// `err` is the live error slot DuckDB passed to the callback.
pub unsafe fn set_error(err: *mut duckdb_v2_error_info_handle, message: &str) {
    if err.is_null() {
        return;
    }
    let message = message.replace('\0', " ");
    // SAFETY: the caller's contract: `*err` is a live error info; DuckDB copies the text.
    unsafe {
        duckdb_v2_error_info_set_code(*err, DUCKDB_V2_ERROR::DUCKDB_V2_ERROR_INPUT_INVALID);
        duckdb_v2_error_info_set_text(*err, &view(&message));
    }
}

/// Runs a callback body: an error or a panic is reported through `err`, never
/// unwound into DuckDB.
///
/// # Safety
/// `err` is the live error slot DuckDB passed to the callback.
pub unsafe fn guarded(
    err: *mut duckdb_v2_error_info_handle,
    f: impl FnOnce() -> Result<(), BoxError>,
) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let message = match result {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            format!("promduck: internal error: {what}")
        }
    };
    // SAFETY: the caller's contract.
    unsafe { set_error(err, &message) };
}

/// An owned logical type, destroyed when dropped.
pub struct LogicalType(pub duckdb_v2_logical_type_handle);

impl LogicalType {
    /// A type from its SQL text (`VARCHAR`, `MAP(VARCHAR, VARCHAR)`).
    pub fn parse(factory: duckdb_v2_factory_handle, text: &str) -> Result<LogicalType, BoxError> {
        let mut t: duckdb_v2_logical_type_handle = null_mut();
        // SAFETY: `factory` is DuckDB's; `t` receives an owned type.
        call(
            |e| unsafe { duckdb_v2_factory_create_type_from_text(factory, &view(text), &mut t, e) },
            "creating a type",
        )?;
        Ok(LogicalType(t))
    }

    /// A type without parameters from its id (`ANY`, which has no SQL text).
    pub fn of(
        factory: duckdb_v2_factory_handle,
        id: DUCKDB_V2_LOGICAL_TYPE_ID,
    ) -> Result<LogicalType, BoxError> {
        let mut t: duckdb_v2_logical_type_handle = null_mut();
        // SAFETY: `factory` is DuckDB's; no parameters; `t` receives an owned type.
        call(
            |e| unsafe {
                duckdb_v2_factory_create_type_from_id(
                    factory,
                    id,
                    std::ptr::null(),
                    std::ptr::null(),
                    0,
                    &mut t,
                    e,
                )
            },
            "creating a type",
        )?;
        Ok(LogicalType(t))
    }

    pub fn id(&self) -> Result<DUCKDB_V2_LOGICAL_TYPE_ID, BoxError> {
        let mut id = DUCKDB_V2_LOGICAL_TYPE_ID::DUCKDB_V2_LOGICAL_TYPE_ID_INVALID;
        // SAFETY: `self.0` is a live type.
        call(
            |e| unsafe { duckdb_v2_logical_type_get_id(self.0, &mut id, e) },
            "reading a type",
        )?;
        Ok(id)
    }
}

impl Drop for LogicalType {
    fn drop(&mut self) {
        // SAFETY: an owned handle, destroyed once.
        unsafe { duckdb_v2_logical_type_destroy(&mut self.0) };
    }
}

/// An owned value, destroyed when dropped.
pub struct Value(pub duckdb_v2_value_handle);

impl Drop for Value {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: an owned handle, destroyed once.
            unsafe { duckdb_v2_value_destroy(&mut self.0) };
        }
    }
}

/// What promduck reads from a value: its text, or a list's items' texts.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Null,
    Scalar {
        ty: DUCKDB_V2_LOGICAL_TYPE_ID,
        text: String,
    },
    List(Vec<Arg>),
}

impl Value {
    pub fn is_null(&self) -> Result<bool, BoxError> {
        let mut null = false;
        // SAFETY: `self.0` is a live value.
        call(
            |e| unsafe { duckdb_v2_value_is_null(self.0, &mut null, e) },
            "reading a value",
        )?;
        Ok(null)
    }

    pub fn logical_type(&self) -> Result<LogicalType, BoxError> {
        let mut t: duckdb_v2_logical_type_handle = null_mut();
        // SAFETY: `self.0` is a live value; `t` receives an owned type.
        call(
            |e| unsafe { duckdb_v2_value_get_logical_type(self.0, &mut t, e) },
            "reading a value's type",
        )?;
        Ok(LogicalType(t))
    }

    /// The value as DuckDB prints it (a VARCHAR's own text).
    pub fn text(&self) -> Result<String, BoxError> {
        let mut buf = vec![0u8; 256];
        loop {
            let mut len: idx_t = 0;
            // SAFETY: `buf` has `buf.len()` writable bytes.
            call(
                |e| unsafe {
                    duckdb_v2_value_to_string(
                        self.0,
                        buf.as_mut_ptr().cast(),
                        buf.len() as idx_t,
                        &mut len,
                        e,
                    )
                },
                "reading a value's text",
            )?;
            let len = len as usize;
            if len < buf.len() {
                buf.truncate(len);
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            buf = vec![0u8; len + 1];
        }
    }

    /// The value read for promduck's parameters.
    pub fn arg(&self) -> Result<Arg, BoxError> {
        if self.is_null()? {
            return Ok(Arg::Null);
        }
        let ty = self.logical_type()?.id()?;
        if ty == DUCKDB_V2_LOGICAL_TYPE_ID::DUCKDB_V2_LOGICAL_TYPE_ID_LIST {
            let mut n: idx_t = 0;
            // SAFETY: `self.0` is a live LIST value.
            call(
                |e| unsafe { duckdb_v2_value_get_child_count(self.0, &mut n, e) },
                "reading a list",
            )?;
            let mut items = Vec::with_capacity(n as usize);
            for i in 0..n {
                let mut c: duckdb_v2_value_handle = null_mut();
                // SAFETY: `i` is below the child count; `c` receives an owned value.
                call(
                    |e| unsafe { duckdb_v2_value_get_child(self.0, i, &mut c, e) },
                    "reading a list item",
                )?;
                items.push(Value(c).arg()?);
            }
            return Ok(Arg::List(items));
        }
        Ok(Arg::Scalar {
            ty,
            text: self.text()?,
        })
    }
}

/// A type's SQL name as DuckDB's id spells it (`INTEGER`, `TIMESTAMP_TZ`).
pub fn type_name(ty: DUCKDB_V2_LOGICAL_TYPE_ID) -> String {
    format!("{ty:?}")
        .trim_start_matches("DUCKDB_V2_LOGICAL_TYPE_ID_")
        .to_string()
}

impl Arg {
    /// The texts of a string or a list of strings (NULL items skipped); another type
    /// is `Err(type name)`.
    pub fn strings(&self) -> Option<Result<Vec<String>, String>> {
        use DUCKDB_V2_LOGICAL_TYPE_ID::DUCKDB_V2_LOGICAL_TYPE_ID_VARCHAR as VARCHAR;
        match self {
            Arg::Null => None,
            Arg::Scalar { ty, text } if *ty == VARCHAR => Some(Ok(vec![text.clone()])),
            Arg::Scalar { ty, .. } => Some(Err(type_name(*ty))),
            Arg::List(items) => {
                let mut out = Vec::new();
                for i in items {
                    match i {
                        Arg::Null => {}
                        Arg::Scalar { ty, text } if *ty == VARCHAR => out.push(text.clone()),
                        Arg::Scalar { ty, .. } => {
                            return Some(Err(format!("{}[]", type_name(*ty))))
                        }
                        Arg::List(_) => return Some(Err("a nested list".into())),
                    }
                }
                Some(Ok(out))
            }
        }
    }

    /// The value's text (a list as `[a, b]`); `None` when NULL.
    pub fn render(&self) -> Option<String> {
        match self {
            Arg::Null => None,
            Arg::Scalar { text, .. } => Some(text.clone()),
            Arg::List(items) => Some(format!(
                "[{}]",
                items
                    .iter()
                    .map(|i| i.render().unwrap_or_else(|| "NULL".into()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// Boxes `value` as an opaque handle DuckDB owns and drops with the query.
pub fn opaque<T>(value: T) -> duckdb_v2_opaque {
    unsafe extern "C" fn destroy<T>(p: *mut c_void) {
        if !p.is_null() {
            // SAFETY: `p` came from `Box::into_raw` below, and DuckDB destroys it once.
            drop(unsafe { Box::from_raw(p.cast::<T>()) });
        }
    }
    duckdb_v2_opaque {
        ptr: Box::into_raw(Box::new(value)).cast(),
        destroy: Some(destroy::<T>),
        equals: None,
    }
}

/// A vector of the output chunk.
pub struct Vector(pub duckdb_v2_vector_handle);

impl Vector {
    pub fn set_size(&self, n: usize) -> Result<(), BoxError> {
        // SAFETY: a live vector of the output chunk.
        call(
            |e| unsafe { duckdb_v2_vector_set_size(self.0, n as idx_t, e) },
            "sizing a vector",
        )
    }

    pub fn data<T>(&self) -> Result<*mut T, BoxError> {
        let mut p: *mut c_void = null_mut();
        // SAFETY: a live vector of the output chunk.
        call(
            |e| unsafe { duckdb_v2_vector_get_data_mutable(self.0, &mut p, e) },
            "writing a vector",
        )?;
        Ok(p.cast())
    }

    pub fn set_null(&self, row: usize) -> Result<(), BoxError> {
        // SAFETY: a live vector; `row` is below its size (the callers size first).
        call(
            |e| unsafe { duckdb_v2_vector_set_null(self.0, row as idx_t, e) },
            "writing a NULL",
        )
    }

    pub fn child(&self, i: usize) -> Result<Vector, BoxError> {
        let mut c: duckdb_v2_vector_handle = null_mut();
        // SAFETY: a live nested vector; DuckDB checks the index.
        call(
            |e| unsafe { duckdb_v2_vector_get_child(self.0, i as idx_t, &mut c, e) },
            "reading a child vector",
        )?;
        Ok(Vector(c))
    }

    pub fn arena(&self) -> Result<duckdb_v2_arena_handle, BoxError> {
        let mut a: duckdb_v2_arena_handle = null_mut();
        // SAFETY: a live vector.
        call(
            |e| unsafe { duckdb_v2_vector_get_arena(self.0, &mut a, e) },
            "reading a vector's arena",
        )?;
        Ok(a)
    }
}

/// Writes VARCHARs into a sized vector: short strings inline, longer ones copied
/// into the vector's arena (which lives as long as the vector).
pub struct StringWriter {
    data: *mut duckdb_v2_bytes,
    arena: duckdb_v2_arena_handle,
}

impl StringWriter {
    pub fn new(v: &Vector) -> Result<StringWriter, BoxError> {
        Ok(StringWriter {
            data: v.data()?,
            arena: v.arena()?,
        })
    }

    /// # Safety
    /// `row` is below the vector's size.
    pub unsafe fn write(&self, row: usize, s: &str) -> Result<(), BoxError> {
        let len = s.len();
        let mut b: duckdb_v2_bytes = unsafe { std::mem::zeroed() };
        if len <= 12 {
            // SAFETY: writing the inline variant of a zeroed union, `len` ≤ 12 bytes.
            unsafe {
                b.value.inlined.length = len as u32;
                std::ptr::copy_nonoverlapping(
                    s.as_ptr(),
                    b.value.inlined.inlined.as_mut_ptr().cast(),
                    len,
                );
            }
        } else {
            let mut p: *mut u8 = null_mut();
            // SAFETY: the arena of this vector; `p` receives `len` writable bytes.
            call(
                |e| unsafe { duckdb_v2_arena_allocate(self.arena, len as idx_t, &mut p, e) },
                "allocating a string",
            )?;
            // SAFETY: `p` has `len` bytes; the prefix is the first four.
            unsafe {
                std::ptr::copy_nonoverlapping(s.as_ptr(), p, len);
                b.value.pointer.length = len as u32;
                std::ptr::copy_nonoverlapping(
                    s.as_ptr(),
                    b.value.pointer.prefix.as_mut_ptr().cast(),
                    4,
                );
                b.value.pointer.ptr = p.cast();
            }
        }
        // SAFETY: the caller's contract: `row` is inside the vector's data.
        unsafe { *self.data.add(row) = b };
        Ok(())
    }

    /// Gives row `row` the same string as row `from` (already written): no copy.
    ///
    /// # Safety
    /// Both rows are below the vector's size, and `from` was written.
    pub unsafe fn repeat(&self, row: usize, from: usize) {
        // SAFETY: the caller's contract.
        unsafe { *self.data.add(row) = *self.data.add(from) };
    }
}
