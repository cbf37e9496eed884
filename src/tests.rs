//! In-database tests (pgrx wraps each in a rolled-back transaction).
use pgrx::prelude::*;

#[pg_test]
fn binary_accuracy() {
    let acc = Spi::get_one::<f64>(
        "SELECT mlmon.accuracy(mlmon.confusion_matrix(p, a)) FROM (VALUES (true,true),(false,true),(false,false),(true,true)) v(p,a)",
    );
    assert_eq!(acc, Ok(Some(0.75)));
}
