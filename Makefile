PYTHON ?= python3

.PHONY: install test proto bench demo

install:
	$(PYTHON) -m pip install -e '.[test]'

test:
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PYTHON) -m pytest -n 2 tests

# Regenerate the protobuf module from the schema (tests fail when it is stale).
proto:
	$(PYTHON) -m grpc_tools.protoc -Iproto --python_out=proto proto/caffe.proto

demo:
	ristretto demo

bench:
	$(PYTHON) -m benchmarks.run

# Long (20-40 minutes): the manifest's accuracies through the CLI, then the paper's
# quantize + fine-tune flow on LeNet. E2E_DIR=dir keeps (and reuses) the LMDBs.
.PHONY: e2e
e2e:
	$(PYTHON) -m benchmarks.accuracy $(if $(E2E_DIR),--workdir $(E2E_DIR)); status=$$?; \
	$(PYTHON) -m benchmarks.paper_flow $(if $(E2E_DIR),--workdir $(E2E_DIR)) && exit $$status
