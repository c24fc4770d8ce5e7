PYTHON ?= python3

.PHONY: install test proto bench demo docs

install:
	$(PYTHON) -m pip install -e '.[test]'

test:
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PYTHON) -m pytest -n 2 tests

# Regenerate the protobuf module from the schema (tests fail when it is stale).
proto:
	$(PYTHON) -m grpc_tools.protoc -Iproto --python_out=proto proto/caffe.proto

demo:
	ristretto demo

# The API reference, generated from the docstrings by pdoc (HTML in $(DOCS_OUT), git-ignored).
# The package top documents the API and the quantize subpackage; the others are listed.
DOCS_OUT ?= docs/api
DOC_MODULES = ristretto_cli ristretto_cli.api ristretto_cli.pycaffe ristretto_cli.net ristretto_cli.formats \
	ristretto_cli.solvers ristretto_cli.layers ristretto_cli.data ristretto_cli.caffe ristretto_cli.backend \
	ristretto_cli.progress ristretto_cli.errors
docs:
	$(PYTHON) -m pdoc --docformat restructuredtext -o $(DOCS_OUT) $(DOC_MODULES)

bench:
	$(PYTHON) -m benchmarks.run

# Long (20-40 minutes): the manifest's accuracies through the CLI, then the paper's
# quantize + fine-tune flow on LeNet. E2E_DIR=dir keeps (and reuses) the LMDBs.
.PHONY: e2e
e2e:
	$(PYTHON) -m benchmarks.accuracy $(if $(E2E_DIR),--workdir $(E2E_DIR)); status=$$?; \
	$(PYTHON) -m benchmarks.paper_flow $(if $(E2E_DIR),--workdir $(E2E_DIR)) && exit $$status
