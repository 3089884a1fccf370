.PHONY: demo test unit stop benchmark

demo:  ## bring everything up and deploy samples/hello through the TANGO API
	bash scripts/demo.sh

test:  ## the whole test suite
	bash scripts/test.sh

unit:  ## the tests that need no Docker engine (seconds): unit tests, the REST API and DAGs on Airflow's DB
	bash scripts/test.sh -q -m "not docker"

stop:  ## stop the demo stack (deployed services keep running until /stop)
	bash scripts/stack.sh stop $${DEMO_DIR:-.demo}

benchmark:  ## deploy speed and 20 projects at once beside the raw docker build/push/run; status under TANGO's polling; Cloud Run status-poll cost; scheduled-DAG parse time
	bash scripts/setup.sh && .venv/bin/python benchmarks/deploy_speed.py && .venv/bin/python benchmarks/concurrent_deploys.py \
		&& .venv/bin/python benchmarks/status_load.py \
		&& .venv/bin/python benchmarks/cloudrun_status.py && .venv/bin/python benchmarks/scheduled_parse.py
