-- Wake-ups for journal appends: a run page served by a replica that does not execute the run
-- follows its journal at once instead of polling it. Told on the same `chaosbot` channel as
-- `entry:<seq>:<run id>` when the append commits; best effort like the others (pages still
-- sweep the journal behind it).
CREATE FUNCTION chaosbot_notify_entry() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('chaosbot', 'entry:' || NEW.seq || ':' || NEW.run_id);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER journal_wakeup AFTER INSERT ON journal
    FOR EACH ROW EXECUTE FUNCTION chaosbot_notify_entry();
