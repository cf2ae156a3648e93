//! Metrics: every name, its labels and meaning in one place, and the Prometheus
//! endpoint that serves them.
//!
//! Names follow `cdc_bridge_<stage>_<what>_<unit>`. Labels are tenant, table and
//! operation only: never a key or a value (no patient data in metrics).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Change events published, by `tenant`, `table` and `op` (read, insert, update, delete, ddl).
pub const SOURCE_EVENTS: &str = "cdc_bridge_source_events_total";
/// Bytes of row data published, by `tenant` and `table`.
pub const SOURCE_BYTES: &str = "cdc_bridge_source_bytes_total";
/// Snapshot rows published, by `tenant` and `table`.
pub const SOURCE_SNAPSHOT_ROWS: &str = "cdc_bridge_source_snapshot_rows_total";
/// Estimated rows of the table being snapshotted, by `tenant` and `table`.
pub const SOURCE_SNAPSHOT_ROWS_ESTIMATE: &str = "cdc_bridge_source_snapshot_rows_estimate";
/// Events sent to the dead-letter topic by the source.
pub const SOURCE_DEAD_LETTERS: &str = "cdc_bridge_source_dead_letters_total";
/// Seconds between the commit of the last transaction read and now.
pub const SOURCE_DELAY: &str = "cdc_bridge_source_delay_seconds";
/// Offset in the current binlog file of the last committed checkpoint.
pub const SOURCE_POSITION: &str = "cdc_bridge_source_binlog_position_bytes";
/// Sequence number of the current binlog file of the last committed checkpoint.
pub const SOURCE_FILE: &str = "cdc_bridge_source_binlog_file_sequence";
/// Times the source started over from its checkpoint after a retriable failure.
pub const SOURCE_RESTARTS: &str = "cdc_bridge_source_restarts_total";

/// Change events applied by the sink, by `tenant`, `table` and `op`.
pub const SINK_ROWS: &str = "cdc_bridge_sink_rows_total";
/// Row writes the position guard skipped as not newer than the target's, by `table` (target schema.table).
pub const SINK_ROWS_SKIPPED: &str = "cdc_bridge_sink_rows_skipped_total";
/// Events per committed batch (histogram).
pub const SINK_BATCH_EVENTS: &str = "cdc_bridge_sink_batch_events";
/// Seconds to apply and commit a batch (histogram).
pub const SINK_BATCH_SECONDS: &str = "cdc_bridge_sink_batch_duration_seconds";
/// Now minus the v1 commit time of the last applied event, by `tenant`.
pub const SINK_DELAY: &str = "cdc_bridge_sink_delay_seconds";
/// Events sent to the dead-letter topic by the sink, by `stage` (decode, transform).
pub const SINK_DEAD_LETTERS: &str = "cdc_bridge_sink_dead_letters_total";
/// Batches retried after a retriable failure.
pub const SINK_RETRIES: &str = "cdc_bridge_sink_retries_total";
/// Batches dropped because another sink had moved a partition's stored offset.
pub const SINK_FENCED: &str = "cdc_bridge_sink_fenced_batches_total";

/// Documents rendered and written (content changed), by `kind`.
pub const DOCUMENTS_RENDERED: &str = "cdc_bridge_sink_documents_rendered_total";
/// Documents rendered whose content hash was unchanged (not rewritten), by `kind`.
pub const DOCUMENTS_UNCHANGED: &str = "cdc_bridge_sink_documents_unchanged_total";
/// Documents unchanged by the bookkeeping but missing or different in v2,
/// rewritten (also counted as rendered), by `kind`.
pub const DOCUMENTS_REPAIRED: &str = "cdc_bridge_sink_documents_repaired_total";
/// Dirty documents of a tenant whose snapshot is being copied, left to be
/// rendered once it ends.
pub const DOCUMENTS_DEFERRED: &str = "cdc_bridge_sink_documents_deferred_total";
/// Documents removed (or marked deleted) with their root v1 row, by `kind`.
pub const DOCUMENTS_DELETED: &str = "cdc_bridge_sink_documents_deleted_total";
/// Seconds to render one document (histogram, by `kind`).
pub const DOCUMENT_RENDER_SECONDS: &str = "cdc_bridge_sink_document_render_duration_seconds";
/// Documents of the current batch waiting for or in rendering.
pub const DOCUMENTS_QUEUE: &str = "cdc_bridge_sink_documents_queue_depth";

pub(crate) fn describe() {
    describe_counter!(DOCUMENTS_RENDERED, Unit::Count, "Documents rendered and written");
    describe_counter!(
        DOCUMENTS_UNCHANGED,
        Unit::Count,
        "Documents rendered with an unchanged hash, not rewritten"
    );
    describe_counter!(
        DOCUMENTS_REPAIRED,
        Unit::Count,
        "Documents missing or altered in v2, rewritten"
    );
    describe_counter!(
        DOCUMENTS_DEFERRED,
        Unit::Count,
        "Documents left to render after their tenant's snapshot"
    );
    describe_counter!(
        DOCUMENTS_DELETED,
        Unit::Count,
        "Documents removed with their root row"
    );
    describe_histogram!(
        DOCUMENT_RENDER_SECONDS,
        Unit::Seconds,
        "Time to render one document"
    );
    describe_gauge!(
        DOCUMENTS_QUEUE,
        Unit::Count,
        "Documents of the current batch left to render"
    );
    describe_counter!(SINK_ROWS, Unit::Count, "Change events applied by the sink");
    describe_counter!(
        SINK_ROWS_SKIPPED,
        Unit::Count,
        "Row writes skipped by the position guard (not newer than the target's)"
    );
    describe_histogram!(SINK_BATCH_EVENTS, Unit::Count, "Events per committed batch");
    describe_histogram!(
        SINK_BATCH_SECONDS,
        Unit::Seconds,
        "Time to apply and commit a batch"
    );
    describe_gauge!(
        SINK_DELAY,
        Unit::Seconds,
        "Now minus the v1 commit time of the last applied event"
    );
    describe_counter!(
        SINK_DEAD_LETTERS,
        Unit::Count,
        "Events sent to the dead-letter topic by the sink"
    );
    describe_counter!(
        SINK_RETRIES,
        Unit::Count,
        "Batches retried after retriable failures"
    );
    describe_counter!(
        SINK_FENCED,
        Unit::Count,
        "Batches dropped because another sink had moved the partition"
    );
    describe_counter!(SOURCE_EVENTS, Unit::Count, "Change events published to Kafka");
    describe_counter!(SOURCE_BYTES, Unit::Bytes, "Bytes of row data published to Kafka");
    describe_counter!(SOURCE_SNAPSHOT_ROWS, Unit::Count, "Snapshot rows published");
    describe_gauge!(
        SOURCE_SNAPSHOT_ROWS_ESTIMATE,
        Unit::Count,
        "Estimated rows of the table being snapshotted"
    );
    describe_counter!(
        SOURCE_DEAD_LETTERS,
        Unit::Count,
        "Events sent to the dead-letter topic"
    );
    describe_gauge!(
        SOURCE_DELAY,
        Unit::Seconds,
        "Now minus the commit time of the last transaction read"
    );
    describe_gauge!(
        SOURCE_POSITION,
        Unit::Bytes,
        "Binlog offset of the last committed checkpoint"
    );
    describe_gauge!(
        SOURCE_FILE,
        Unit::Count,
        "Binlog file sequence of the last committed checkpoint"
    );
    describe_counter!(
        SOURCE_RESTARTS,
        Unit::Count,
        "Restarts from the checkpoint after retriable failures"
    );
}
