-- Wake-ups for replicas: every change another replica must act on at once is told on the
-- `chaosbot` channel when its transaction commits (a new run, an abort request, a run done,
-- a halt set or lifted). Triggers, so every writer notifies, whatever code path wrote it.
-- Notifications are best effort (lost while a listener reconnects): replicas still sweep.
CREATE FUNCTION chaosbot_notify_run() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('chaosbot', 'run:' || NEW.id);
    ELSIF NEW.state = 'done' AND OLD.state <> 'done' THEN
        PERFORM pg_notify('chaosbot', 'done:' || NEW.id);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER runs_wakeup AFTER INSERT OR UPDATE OF state ON runs
    FOR EACH ROW EXECUTE FUNCTION chaosbot_notify_run();

CREATE FUNCTION chaosbot_notify_abort() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('chaosbot', 'abort:' || NEW.run_id);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER abort_requests_wakeup AFTER INSERT ON abort_requests
    FOR EACH ROW EXECUTE FUNCTION chaosbot_notify_abort();

CREATE FUNCTION chaosbot_notify_halt() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('chaosbot', 'halt');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER halts_wakeup AFTER INSERT OR UPDATE ON halts
    FOR EACH ROW EXECUTE FUNCTION chaosbot_notify_halt();
