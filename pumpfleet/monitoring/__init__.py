"""The monitor, without Ray: what each class's served predictions are compared with
(``reference``), the per-class summary (``summary``), the whole run from the prediction
log to retrain triggers and reports (``run``), and the HTML report (``report``). The job
``python -m ray_jobs.monitor`` only fans the classes out as Ray tasks."""
