//! `promduck_test_panic(stage)`: panics on purpose in `bind`, `init` or `func`, to
//! prove that no panic crosses into DuckDB. Registered only when the environment
//! variable `PROMDUCK_TEST_PANIC=1` is set at `LOAD` time (the test suite does).

use crate::params::BoxError;
use crate::vectors::varchar;
use duckdb::core::{DataChunkHandle, LogicalTypeHandle};
use duckdb::vtab::{BindInfo, InitInfo, TableFunctionInfo, VTab};

pub struct PanicTest;

pub struct Stage(String);

impl VTab for PanicTest {
    type BindData = Stage;
    type InitData = ();

    fn bind(bind: &BindInfo) -> Result<Stage, BoxError> {
        bind.add_result_column("x", varchar());
        let stage = crate::params::positional(bind, 0).render();
        if stage == "bind" {
            panic!("promduck_test_panic: deliberate panic in bind");
        }
        Ok(Stage(stage))
    }

    fn init(init: &InitInfo) -> Result<(), BoxError> {
        // SAFETY: init runs only after a successful `bind`, whose `Stage` duckdb-rs
        // stored as this call's bind data (`Stage` is `BindData`); DuckDB keeps it
        // alive until the query ends, and nothing mutates it.
        let stage = unsafe { &*init.get_bind_data::<Stage>() };
        if stage.0 == "init" {
            panic!("promduck_test_panic: deliberate panic in init");
        }
        Ok(())
    }

    fn func(func: &TableFunctionInfo<Self>, out: &mut DataChunkHandle) -> Result<(), BoxError> {
        if func.get_bind_data().0 == "func" {
            panic!("promduck_test_panic: deliberate panic in func");
        }
        out.set_len(0);
        Ok(())
    }

    fn parameters() -> Option<Vec<LogicalTypeHandle>> {
        Some(vec![varchar()])
    }
}
