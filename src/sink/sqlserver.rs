//! SQL Server target (tiberius).

use std::collections::HashMap;

use crate::config::TargetConfig;

use super::target::{OffsetClaim, RowWrite, TableDef, Target, TargetError, TenantProgress};

pub struct SqlServerTarget;

fn unavailable() -> TargetError {
    TargetError::fatal("SQL Server target: not available")
}

impl Target for SqlServerTarget {
    async fn connect(_cfg: &TargetConfig) -> Result<Self, TargetError> {
        Err(unavailable())
    }
    fn kind(&self) -> &'static str {
        "sqlserver"
    }
    async fn prepare(&mut self) -> Result<(), TargetError> {
        Err(unavailable())
    }
    async fn read_offsets(&mut self, _: &str, _: &str) -> Result<HashMap<i32, i64>, TargetError> {
        Err(unavailable())
    }
    async fn ensure_table(&mut self, _: &TableDef) -> Result<TableDef, TargetError> {
        Err(unavailable())
    }
    async fn rename_column(&mut self, _: &str, _: &str, _: &str, _: &str) -> Result<bool, TargetError> {
        Err(unavailable())
    }
    async fn begin(&mut self) -> Result<(), TargetError> {
        Err(unavailable())
    }
    async fn claim_offsets(&mut self, _: &str, _: &str, _: &[OffsetClaim]) -> Result<bool, TargetError> {
        Err(unavailable())
    }
    async fn stored_positions(
        &mut self,
        _: &TableDef,
        _: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>, TargetError> {
        Err(unavailable())
    }
    async fn write(&mut self, _: &TableDef, _: &[RowWrite]) -> Result<(), TargetError> {
        Err(unavailable())
    }
    async fn record_progress(&mut self, _: &[TenantProgress]) -> Result<(), TargetError> {
        Err(unavailable())
    }
    async fn commit(&mut self) -> Result<(), TargetError> {
        Err(unavailable())
    }
    async fn rollback(&mut self) {}
}
