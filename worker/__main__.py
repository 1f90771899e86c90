from worker.main import run_worker

run_worker()
