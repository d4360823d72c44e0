-- The file id of an upload whose sharing call was started (with call_started_ms): the next
-- attempt looks for a message carrying that file before uploading it again (an upload
-- cannot carry message metadata, so its file id is what finds it).
ALTER TABLE slack_outbox ADD COLUMN call_file_id TEXT;
