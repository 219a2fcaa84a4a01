"""Registration of `<dynamics mode='mts'>`, `<dynamics mode='learned_map'>` and the PES `ipi_mts` into i-PI,
in memory, without touching its files.

i-PI 3.3 has no plugin mechanism for motion classes. What `register()` does (idempotent):

1. appends ``'mts'`` and ``'learned_map'`` to ``InputDynamics.attribs["mode"][1]["options"]``;
2. adds to `<dynamics>` the attributes ``thermostat_placement`` ('outer' | 'inner' |
   'isokinetic', default 'outer'; mode='mts'), ``model`` (the map file or shipped map; mode='learned_map') and
   ``energy_rescaling`` (default false; mode='learned_map'), and the fields ``<mts_guard>``
   (blow-up guard and monitor settings, both modes) and ``<isokinetic>`` (the state of the
   isokinetic thermostat, written by such runs into their RESTART files); all are read from XML
   (`InputDynamics.fetch` passes them to `Dynamics.__init__`) and written back into RESTART
   files (`InputDynamics.store`), only when they differ from their defaults, so i-PI's own
   modes write the same RESTART files as before;
3. registers the PES ``ipi_mts`` for `<ffdirect>` (ipi_mts.server.pes): ipi-mts models in
   i-PI's own process, with the species taken from the simulation (`load_simulation`, which
   `ipi-mts run` uses, and `interactive_simulation` pass them);
4. wraps `Dynamics.__init__`: with ``mode='mts'`` the motion gets an `MTSIntegrator`, with
   ``mode='learned_map'`` a `LearnedMapIntegrator` (both subclasses of i-PI's
   `NVTIntegrator`). The object stays a `Dynamics`, so its thermostat, barostat, ``nmts``
   and ``ethermo`` are stored in RESTART by i-PI's own code. Any other mode runs i-PI's
   code unchanged (the new settings must then be at their defaults).

A RESTART with ``mode='mts'`` (or 'learned_map') needs the same registration to load: run it with
``ipi-mts run FILE``. Plain ``i-pi`` cannot be taught a message of ours without patching its
files, but it reports the first attribute it does not know, by name. RESTART files of our modes
therefore carry, first after i-PI's own attributes of `<dynamics>`, the attribute
``needs_ipi-mts_run`` (`RUN_HINT_ATTR`; its value says how to run the file), and plain ``i-pi``
stops while reading them with a traceback that ends in::

    NameError: Attribute name 'needs_ipi-mts_run' is not a recognized property of 'dynamics' objects

Input files without it stop with ``ValueError: mts is not a valid option ([...])`` (or, for
``thermostat_placement='inner'``, with that attribute's NameError).
"""

from __future__ import annotations

import functools
import threading

MODE = "mts"
MAP_MODE = "learned_map"
PLACEMENTS = ("outer", "inner", "isokinetic")
# written into RESTART files of our modes, so that plain i-pi's first error names the launcher
RUN_HINT_ATTR = "needs_ipi-mts_run"
RUN_HINT = "resume with: ipi-mts run FILE"
# the settings each of our modes adds to <dynamics>, with their defaults
MAP_SETTINGS = {"model": "", "energy_rescaling": False}

_lock = threading.Lock()
_registered = False


def _guard_input_class():
    """The input class of `<mts_guard>` (built lazily: it needs i-PI's input machinery)."""
    from ipi.utils.inputvalue import InputDictionary, InputValue

    from .monitor import GuardSettings

    d = GuardSettings()

    class InputMTSGuard(InputDictionary):
        """Blow-up guard and monitor of `<dynamics mode='mts'>`."""

        fields = {
            "stride": (
                InputValue,
                {
                    "dtype": int,
                    "default": d.stride,
                    "help": "Every `stride` steps: the closest-pair check and one line of the "
                    "monitor file. NaN and temperature checks run every step. 0 switches "
                    "the guard and the monitor off.",
                },
            ),
            "max_temperature_factor": (
                InputValue,
                {
                    "dtype": float,
                    "default": d.max_temperature_factor,
                    "help": "Stop when the kinetic temperature exceeds this multiple of the "
                    "ensemble temperature (0: no temperature check; NVE runs without a "
                    "temperature are never checked).",
                },
            ),
            "min_distance": (
                InputValue,
                {
                    "dtype": float,
                    "default": d.min_distance,
                    "dimension": "length",
                    "help": "Stop when two atoms (of any bead) come closer than this (0: no check).",
                },
            ),
            "file": (
                InputValue,
                {
                    "dtype": str,
                    "default": d.file,
                    "help": "Monitor file (with the output prefix): step, time, conserved "
                    "energy, its drift and the kinetic temperature of each species, every "
                    "`stride` steps. 'none' writes no file.",
                },
            ),
        }
        default_help = (
            "Blow-up guard and monitor of mode='mts': a run that produces NaN, overheats or "
            "collapses two atoms stops with one line and a RESTART of the last stored step."
        )
        default_label = "MTS_GUARD"

    return InputMTSGuard


def _wrap_input_dynamics(InputDynamics):
    import numpy as np
    from ipi.utils.inputvalue import InputArray, InputAttribute, input_default

    options = InputDynamics.attribs["mode"][1]["options"]
    for mode in (MODE, MAP_MODE):
        if mode not in options:
            options.append(mode)

    # first of ours: i-PI reports the first attribute it does not know
    InputDynamics.attribs[RUN_HINT_ATTR] = (
        InputAttribute,
        {
            "dtype": str,
            "default": "",
            "help": "Written into RESTART files of mode='mts' and 'learned_map', and ignored on "
            "reading: plain i-pi stops on it with an error that names `ipi-mts run`.",
        },
    )
    InputDynamics.attribs["thermostat_placement"] = (
        InputAttribute,
        {
            "dtype": str,
            "default": "outer",
            "options": list(PLACEMENTS),
            "help": "mode='mts' only. 'outer': the thermostat acts around the whole MTS step "
            "(as i-PI's nve/nvt with nmts); 'inner': its O steps act in the innermost loop, "
            "with the innermost time step (BAOAB-RESPA); 'isokinetic': stochastic isokinetic "
            "Nose-Hoover RESPA (SIN(R); classical, with a langevin <thermostat> whose tau sets "
            "it): the positions sample the canonical ensemble with no resonance limit on the "
            "outer step, the velocities are not Maxwell-Boltzmann.",
        },
    )
    InputDynamics.attribs["model"] = (
        InputAttribute,
        {
            "dtype": str,
            "default": MAP_SETTINGS["model"],
            "help": "mode='learned_map' only: the map, a map file (ipi_mts.potentials.model_file) "
            "or the name of a shipped map; 'direct:MAP', that map's direct predictor alone (no "
            "solve: explicit, not symplectic); or 'midpoint:POTENTIAL' (the implicit midpoint "
            "rule of a reference potential, with this <timestep>).",
        },
    )
    InputDynamics.attribs["energy_rescaling"] = (
        InputAttribute,
        {
            "dtype": bool,
            "default": MAP_SETTINGS["energy_rescaling"],
            "help": "mode='learned_map' only: after each map step, scale the momenta so that "
            "the anchor Hamiltonian K + V is what it was before the map (not symplectic, not "
            "time-reversible; see ipi_mts/motion/learned_map.py).",
        },
    )
    InputDynamics.fields["mts_guard"] = (
        _guard_input_class(),
        {"default": {}, "help": "mode='mts' and 'learned_map': blow-up guard and monitor settings."},
    )
    InputDynamics.fields["isokinetic"] = (
        InputArray,
        {
            "dtype": float,
            "default": input_default(factory=np.zeros, args=(0,)),
            "help": "thermostat_placement='isokinetic' only: the thermostat velocities v1 and v2 "
            "(2L rows of 3N, atomic units), written into RESTART files so that a run resumes "
            "exactly; empty: drawn at the start.",
        },
    )

    def ours(self):
        # InputDrivenDynamics inherits store/fetch but has neither setting
        return all(key in self.__dict__ for key in ("thermostat_placement", "mts_guard", "isokinetic"))

    orig_store, orig_fetch = InputDynamics.store, InputDynamics.fetch

    @functools.wraps(orig_store)
    def store(self, dyn):
        orig_store(self, dyn)
        if dyn == {} or not ours(self):
            return
        self.__dict__[RUN_HINT_ATTR].store(RUN_HINT if dyn.enstype in (MODE, MAP_MODE) else "")
        self.thermostat_placement.store(getattr(dyn, "thermostat_placement", "outer"))
        for key, default in MAP_SETTINGS.items():
            getattr(self, key).store(getattr(dyn, key, default))
        guard = getattr(dyn, "mts_guard", None)
        if guard:
            self.mts_guard.store(guard)
        isokinetic = getattr(dyn.integrator, "isokinetic", None)
        if isokinetic is not None:
            self.isokinetic.store(isokinetic.state)

    @functools.wraps(orig_fetch)
    def fetch(self):
        rv = orig_fetch(self)
        if ours(self):
            rv["thermostat_placement"] = self.thermostat_placement.fetch()
            state = self.isokinetic.fetch()
            rv["isokinetic"] = state if state.size else None  # empty: drawn at the start
            rv.update({key: getattr(self, key).fetch() for key in MAP_SETTINGS})
        return rv

    for f, w in (("store", store), ("fetch", fetch)):
        w.__ipi_mts_original__ = getattr(InputDynamics, f)
        setattr(InputDynamics, f, w)


def _wrap_dynamics(Dynamics):
    orig_init = Dynamics.__init__

    @functools.wraps(orig_init)
    def __init__(
        self,
        *args,
        thermostat_placement="outer",
        mts_guard=None,
        isokinetic=None,
        model=MAP_SETTINGS["model"],
        energy_rescaling=MAP_SETTINGS["energy_rescaling"],
        **kwargs,
    ):
        orig_init(self, *args, **kwargs)
        self.thermostat_placement = thermostat_placement
        self.mts_guard = dict(mts_guard or {})
        self.model, self.energy_rescaling = model, energy_rescaling
        if thermostat_placement != "outer" and self.enstype != MODE:
            raise ValueError(
                f"thermostat_placement='{thermostat_placement}' needs <dynamics mode='mts'>, "
                f"not mode='{self.enstype}'"
            )
        for key, default in MAP_SETTINGS.items():
            if getattr(self, key) != default and self.enstype != MAP_MODE:
                raise ValueError(f"{key}= needs <dynamics mode='{MAP_MODE}'>, not mode='{self.enstype}'")
        if self.enstype == MODE:
            from .mts import MTSIntegrator

            self.integrator = MTSIntegrator(thermostat_placement, self.mts_guard, isokinetic)
        elif self.enstype == MAP_MODE:
            from .learned_map import LearnedMapIntegrator

            self.integrator = LearnedMapIntegrator(model, energy_rescaling, self.mts_guard)

    __init__.__ipi_mts_original__ = orig_init
    Dynamics.__init__ = __init__


def _register_pes() -> None:
    """`<ffdirect><pes>ipi_mts</pes>`: ipi-mts models inside i-PI's process (ipi_mts.server.pes).
    i-PI imports a PES mode `m` as the module `ipi.pes.<__drivers__[m]>` and checks the name
    against the input's options, fixed when `ipi.inputs.forcefields` was imported."""
    import sys

    import ipi.pes
    from ipi.inputs.forcefields import InputFFDirect

    from ..server import pes

    sys.modules[f"ipi.pes.{pes.PES_NAME}"] = pes
    ipi.pes.__drivers__[pes.PES_NAME] = pes.PES_NAME
    options = InputFFDirect.fields["pes"][1]["options"]
    if pes.PES_NAME not in options:
        options.append(pes.PES_NAME)


def register() -> None:
    """Teach i-PI `<dynamics mode='mts'>`, `<dynamics mode='learned_map'>` and
    `<ffdirect><pes>ipi_mts</pes>`. Call before parsing any XML; safe to call again."""
    global _registered
    with _lock:
        if _registered:
            return
        from ipi.engine.motion.dynamics import Dynamics
        from ipi.inputs.motion.dynamics import InputDynamics

        _wrap_input_dynamics(InputDynamics)
        _wrap_dynamics(Dynamics)
        _register_pes()
        _registered = True


def is_registered() -> bool:
    return _registered


def interactive_simulation(xml_input, **kwargs):
    """`ipi.scripting.InteractiveSimulation` of `xml_input` (an XML string or open file), with
    our modes and PES registered first."""
    register()
    from ipi.scripting import InteractiveSimulation

    from ..server.pes import use_simulation_species

    simulation = InteractiveSimulation(xml_input, **kwargs)
    use_simulation_species(simulation)
    return simulation


def load_simulation(xml_input, **kwargs):
    """`ipi.engine.simulation.Simulation.load_from_xml(xml_input, **kwargs)` with our modes and
    PES registered first, and the PES given the simulation's species."""
    register()
    from ipi.engine.simulation import Simulation

    from ..server.pes import use_simulation_species

    simulation = Simulation.load_from_xml(xml_input, **kwargs)
    use_simulation_species(simulation)
    return simulation
