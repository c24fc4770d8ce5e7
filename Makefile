PYTHON ?= python3

.PHONY: install test proto bench demo

install:
	$(PYTHON) -m pip install -e '.[test]'

test:
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PYTHON) -m pytest -n 2 tests

# Regenerate the protobuf module from the schema (tests fail when it is stale).
proto:
	$(PYTHON) -m grpc_tools.protoc -Iristretto_cli/proto --python_out=ristretto_cli/proto ristretto_cli/proto/caffe.proto

demo:
	ristretto demo

bench:
	$(PYTHON) -m benchmarks.run
