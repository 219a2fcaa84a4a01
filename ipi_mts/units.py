"""The one place where units convert.

On the wire i-PI speaks atomic units: positions and cell in bohr with the cell vectors as
the *columns* of h, energy in Hartree, forces in Hartree/bohr, virial in Hartree (an energy,
not divided by the volume). Inside models everything is eV and Å with cell vectors as *rows*
(the ASE convention). The constants are i-PI's own, so that a length the user writes in Å in
an i-PI XML reaches a model as exactly that length.
"""

from ipi.utils.units import unit_to_internal

BOHR_PER_ANGSTROM = unit_to_internal("length", "angstrom", 1.0)
ANGSTROM_PER_BOHR = 1.0 / BOHR_PER_ANGSTROM
HARTREE_PER_EV = unit_to_internal("energy", "electronvolt", 1.0)
EV_PER_HARTREE = 1.0 / HARTREE_PER_EV
FORCE_WIRE_PER_MODEL = HARTREE_PER_EV / BOHR_PER_ANGSTROM  # (Ha/bohr) per (eV/Å)
FEMTOSECOND = unit_to_internal("time", "femtosecond", 1.0)  # atomic time units per fs
AMU = unit_to_internal("mass", "dalton", 1.0)  # electron masses per dalton
KB_EV_PER_K = EV_PER_HARTREE * unit_to_internal("temperature", "kelvin", 1.0)  # Boltzmann, eV/K


def cell_from_wire(h_bohr):
    """i-PI h (bohr, vectors as columns) -> cell (Å, vectors as rows). Works on (..., 3, 3)."""
    return h_bohr.swapaxes(-1, -2) * ANGSTROM_PER_BOHR


def cell_to_wire(cell_angstrom):
    """Cell (Å, vectors as rows) -> i-PI h (bohr, vectors as columns)."""
    return cell_angstrom.swapaxes(-1, -2) * BOHR_PER_ANGSTROM


def positions_from_wire(q_bohr):
    return q_bohr * ANGSTROM_PER_BOHR


def positions_to_wire(r_angstrom):
    return r_angstrom * BOHR_PER_ANGSTROM


def energy_to_wire(e_ev):
    """Energies and virials: eV -> Hartree."""
    return e_ev * HARTREE_PER_EV


def energy_from_wire(e_hartree):
    return e_hartree * EV_PER_HARTREE


def forces_to_wire(f_ev_per_angstrom):
    return f_ev_per_angstrom * FORCE_WIRE_PER_MODEL


def forces_from_wire(f_hartree_per_bohr):
    return f_hartree_per_bohr / FORCE_WIRE_PER_MODEL
