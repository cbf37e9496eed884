//! Appending a row to a table with its index entries, without a statement,
//! as logical replication applies an INSERT: a statement's executor
//! start-up can cost more than the row.

#![allow(unsafe_code)]

use pgrx::pg_sys;

/// Inserts one row into `relation`: `values` gives (attribute index, value,
/// is NULL) for the columns it sets; every other column (dropped ones
/// included) is NULL. Fires no triggers: callers check there are none.
///
/// # Safety
/// `relation` is open with RowExclusiveLock in a transaction; each value is
/// valid for its column's type.
pub unsafe fn insert_row(relation: pg_sys::Relation, values: impl IntoIterator<Item = (usize, pg_sys::Datum, bool)>) {
    // SAFETY: the caller's promise; the executor state, slot and nodes live
    // in the executor state's memory context, freed at the end.
    unsafe {
        let estate = pg_sys::CreateExecutorState();
        let rte = pg_sys::palloc0(std::mem::size_of::<pg_sys::RangeTblEntry>()).cast::<pg_sys::RangeTblEntry>();
        (*rte).type_ = pg_sys::NodeTag::T_RangeTblEntry;
        (*rte).rtekind = pg_sys::RTEKind::RTE_RELATION;
        (*rte).relid = (*relation).rd_id;
        (*rte).relkind = (*(*relation).rd_rel).relkind;
        (*rte).rellockmode = pg_sys::RowExclusiveLock as i32;
        pg_sys::ExecInitRangeTable(estate, pg_sys::lappend(std::ptr::null_mut(), rte.cast()));
        let info = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()).cast::<pg_sys::ResultRelInfo>();
        (*info).type_ = pg_sys::NodeTag::T_ResultRelInfo;
        pg_sys::InitResultRelInfo(info, relation, 1, std::ptr::null_mut(), 0);
        (*estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
        pg_sys::ExecOpenIndices(info, false);
        let slot = pg_sys::ExecInitExtraTupleSlot(estate, (*relation).rd_att, &pg_sys::TTSOpsVirtual);
        let width = (*(*relation).rd_att).natts as usize;
        let slot_values = std::slice::from_raw_parts_mut((*slot).tts_values, width);
        let slot_nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, width);
        slot_nulls.fill(true);
        for (position, value, null) in values {
            slot_values[position] = value;
            slot_nulls[position] = null;
        }
        pg_sys::ExecStoreVirtualTuple(slot);
        pg_sys::ExecSimpleRelationInsert(info, estate, slot);
        pg_sys::ExecCloseIndices(info);
        pg_sys::ExecResetTupleTable((*estate).es_tupleTable, false);
        pg_sys::FreeExecutorState(estate);
    }
}
