.PHONY: demo test unit scale-out stop benchmark

demo:  ## bring everything up and deploy samples/hello through the TANGO API
	bash scripts/demo.sh

test:  ## the whole test suite
	bash scripts/test.sh

unit:  ## the tests that need no Docker engine (seconds): unit tests, the REST API and DAGs on Airflow's DB
	bash scripts/test.sh -q -m "not docker"

scale-out:  ## the scale-out shape on this machine: PostgreSQL, Redis, CeleryExecutor with two workers, 3 gateway processes
	bash scripts/setup.sh && bash scripts/stack.sh start $${SCALE_OUT_DIR:-.scale-out} --scale-out

stop:  ## stop the demo stack and the scale-out shape (deployed services keep running until /stop)
	bash scripts/stack.sh stop $${DEMO_DIR:-.demo}
	if [ -d $${SCALE_OUT_DIR:-.scale-out} ]; then bash scripts/stack.sh stop $${SCALE_OUT_DIR:-.scale-out}; fi

benchmark:  ## deploy speed and 20 projects at once beside the raw docker build/push/run; status under TANGO's polling; Cloud Run status-poll cost; scheduled-DAG parse time
	bash scripts/setup.sh && .venv/bin/python benchmarks/deploy_speed.py && .venv/bin/python benchmarks/concurrent_deploys.py \
		&& .venv/bin/python benchmarks/status_load.py \
		&& .venv/bin/python benchmarks/cloudrun_status.py && .venv/bin/python benchmarks/scheduled_parse.py
