# Two commands from a clean clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
IPI_MTS := $(abspath $(VENV))/bin/ipi-mts

.PHONY: install demo test test-slow bench models resplit maps clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,mpi]'
	touch $@

# water-64 NVT: the shipped learned pair on MTS (fast every 0.5 fs, slow every 2 fs) next to the
# conventional model at 0.5 fs and q-TIP4P/F, 1 ps each after 0.5 ps of equilibration; prints
# the speedup and how far the observables are from the reference's
demo: $(STAMP)
	mkdir -p runs/demo
	$(abspath $(VENV))/bin/ipi-mts bench learned --outer 2 --nvt-ps 1 --nve-ps 0 \
	    --out runs/demo/learned-mts --workdir runs/demo/work

# the shipped water pair and its baseline, from scratch: q-TIP4P/F data (~15-25 min), then
# `ipi-mts train` (≤ 1 h on 2 cores), then the model files into the package
models: $(STAMP)
	test -f runs/water-data/water-64.extxyz || $(abspath $(VENV))/bin/ipi-mts data generate \
	    --structure inputs/water-64/init.xyz --temperatures 260,300,360 --time-ps 5 \
	    --sample-every 50 --pair-offset 2 --seed 1 --out runs/water-data/water-64.extxyz
	$(abspath $(VENV))/bin/ipi-mts train inputs/training/water-pair.yaml
	cp runs/train/water-pair/pair.pt ipi_mts/models/water-pair.pt
	cp runs/train/water-pair/single.pt ipi_mts/models/water-baseline.pt

# the resplit pair (`ipi-mts resplit`, docs/learned-mts.md), from the shipped pair: its own
# 8-bead PIMD at 0.5 fs (the PIMD benchmark's reference run and its control seed, ~25 min on one
# core), then the fit on every 4th frame of the first run's beads (~20 s). Socket runs are
# reproducible to rounding only, so the frames and the fitted terms come out close to, not
# identical with, the shipped file's
resplit: $(STAMP)
	test -f runs/bench/pimd-pair/reference/nvt/summary.json || $(PY) benchmarks/placement_seeds.py \
	    --reference water-pair --beads 8 --fast socket --methods reference --seeds 1 --nvt-ps 1 \
	    --equilibration-ps 0.25 --structure inputs/water-64/init.xyz --workdir runs/bench/pimd-pair \
	    --out runs/bench/pimd-pair-reference
	rm -f runs/water-pair-resplit.pt
	$(IPI_MTS) resplit water-pair runs/bench/pimd-pair/reference/nvt/run.pos_*.xyz --every 4 \
	    --output runs/water-pair-resplit.pt
	cp runs/water-pair-resplit.pt ipi_mts/models/water-pair-resplit.pt

# the shipped learned maps, from scratch: reference trajectories (EMT aluminium ~8 min, q-TIP4P/F
# water ~14 min on one core), then `ipi-mts train-map` for each (≤ 1 h each on 2 cores; the
# configs' headers give the measured times), then the map files into the package (water-map-4fs
# trains with `ipi-mts train-map inputs/training/water-map-4fs.yaml` and its implicit equations
# solve, but it is not shipped: it heats the hydrogens in MD, docs/learned-maps.md)
maps: $(STAMP)
	test -f runs/map-data/al-108-traj.extxyz || $(IPI_MTS) data trajectories --model ase:EMT \
	    --structure inputs/aluminium/init.xyz --temperatures 300,600,900 --dt-fs 1 --save-every 2 \
	    --segment-fs 500 --segments 6 --spacing-fs 200 --equilibration-ps 2 --out runs/map-data/al-108-traj.extxyz
	test -f runs/map-data/water-64-traj.extxyz || $(IPI_MTS) data trajectories \
	    --structure inputs/water-64/init.xyz --temperatures 250,300,350 --dt-fs 0.25 --save-every 4 \
	    --segment-fs 200 --segments 6 --spacing-fs 200 --equilibration-ps 1 --out runs/map-data/water-64-traj.extxyz
	for m in al-16fs al-32fs water-2fs; do \
	    $(IPI_MTS) train-map inputs/training/$${m%%-*}-map-$${m#*-}.yaml && \
	    cp runs/train-map/$$m/map.pt ipi_mts/models/$${m%%-*}-map-$${m#*-}.pt || exit 1; done

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/serving.py

clean:
	rm -rf $(VENV) *.egg-info
