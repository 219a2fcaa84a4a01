"""q-TIP4P/F flexible water with Ewald electrostatics, as i-PI's Fortran driver computes it.

Habershon, Markland, Manolopoulos, J. Chem. Phys. 131, 024501 (2009); the reference
implementation is `drivers/f90/pes/qtip4pf.f90` of i-PI (`i-pi-driver -m qtip4pf`, and
`-m qtip4pf-sr` for the intramolecular part). Atoms come as O,H,H triplets, one per
molecule. Parameters in atomic units (converted once to eV and Å with `ipi_mts.units`):

Intramolecular (`part="intra"`), per molecule, with Δr = r_OH − 1.78 bohr:

    E = Σ_OH D [a²Δr² − a³Δr³ + (7/12) a⁴Δr⁴] + k_θ (θ − θ_eq)²

D = 0.185 Ha, a = 1.21 bohr⁻¹ (the quartic expansion of a Morse bond), k_θ = 0.07 Ha/rad²
(no factor ½), θ_eq = 107.4°. In a periodic cell the O→H vectors are taken by the minimum-image
convention, so molecules may be wrapped across the box (the Fortran needs them whole).

Intermolecular (`part="inter"`): point charges q_H = +0.5564 e on the hydrogens and
q_M = −1.1128 e on the M site r_M = γ r_O + (1−γ)/2 (r_H1 + r_H2), γ = 0.73612 (forces on M
reach O and H through autograd, the Fortran's chain rule), summed by Ewald:

    E_real  = Σ_{pairs, images, r < r_c} q_i q_j erfc(α r)/r
    E_excl  = −Σ_{intramolecular pairs} q_i q_j / r            (M–H1, M–H2, H1–H2)
    E_recip = (2π/V) Σ_{k ≠ 0, |n_i| ≤ kmax, |k| < 2πα} exp(−k²/4α²)/k² |Σ_j q_j e^{ik·r_j}|²
    E_self  = −(α/√π) Σ_j q_j²

with r_c = L·min(0.5, 1.2 N^(−1/6)) (L the shortest box height, N the number of atoms,
counting the M site in place of O), α = π/r_c, kmax = int(α L_max) (L_max the longest cell
vector) and k = 2π n inv(cell)ᵀ (cell vectors as rows): for an orthorhombic box this is the
Fortran's k = 2π(n_x/L_x, n_y/L_y, n_z/L_z) exactly, and for any cell it holds every k with
|k| < 2πα. erfc is the Abramowitz–Stegun 7.1.26 polynomial (|error| < 1.5e-7), as in the
Fortran. Its derivative is taken from that polynomial (autograd), so forces are the exact
gradient of the energy; the Fortran instead uses the derivative of the exact erfc,
−2α/√π exp(−α²r²), with the polynomial in the 1/r² term: the two differ by at most
2.2e-7 Ha/bohr on the water-216 reference frames (`erfc_gradient="fortran"` reproduces the
Fortran's choice). Plus an O–O
Lennard-Jones σ = 5.96946 bohr, ε = 2.95147e-4 Ha, plainly truncated at 9 Å (no shift,
no tail correction to the energy).

The Ewald parameters (r_c, α, the k set) are set from the cell on every call, as the
Fortran does, and are held constant under differentiation: the virial −∂E/∂ε is then the
usual Ewald virial at fixed α, which is what the Fortran returns (it is not the derivative of
the implemented energy through α(L), which would only follow the Ewald truncation error).
Give `ewald_cutoff` (Å) to fix r_c and α instead, e.g. to compare boxes of different size.

Differences from the Fortran:

* Any cell, triclinic included (the Fortran stops on non-orthorhombic cells). L is the
  shortest distance between opposite faces, which equals the shortest edge for a box.
* Small boxes are exact. The Fortran takes the minimum image only, which misses neighbours
  when a cutoff exceeds half the box: here the real-space and LJ pairs come from
  `ipi_mts.neighbors`, which lists every periodic image within the cutoff (an atom's own
  images included), so a box smaller than twice the 9 Å LJ cutoff gives the energy per
  molecule of the infinite periodic crystal it stands for (the same as a replicated
  supercell). The Fortran rule keeps r_c ≤ L/2 anyway; a larger `ewald_cutoff` is summed
  over all images too, and only the bonded image of an intramolecular pair is excluded
  (other images of the same molecule interact like any other charges). Where a cutoff is
  below half the box, the images found are exactly the Fortran's minimum images.
* The Fortran's LJ virial also subtracts a pressure tail correction (and writes it into
  the (2,3) element instead of (2,2)); there is no such term here, consistent with the
  energy, which has no tail correction in either. Otherwise both are, by construction, the
  virial at fixed Ewald parameters (not compared in numbers: the reference holds none).

Batched: a State of B structures with the same number of atoms is one call; the cell, and
so the Ewald parameters, may differ between structures.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .. import units
from ..errors import UserError
from ..neighbors import neighbor_pairs
from ..state import State
from .base import EnergyModel

# --- parameters, atomic units as in the Fortran's qtipfpf_setparameters -------------------
_LJ_CUTOFF_BOHR = 9.0 / 0.5291772108  # "9 Angstrom cutoff for LJ", with the Fortran's bohr
_GAMMA = 0.73612  # M site: r_M = γ r_O + (1-γ)/2 (r_H1 + r_H2)
_Q_M = -1.1128
_Q_H = 0.5 * 1.1128
_LJ_SIGMA_BOHR = 5.96946
_LJ_EPSILON_HA = 2.95147e-4
_THETA_EQ = 107.4 * math.pi / 180.0
_R_OH_BOHR = 1.78
_D_HA = 0.185
_K_THETA_HA = 0.07
_A_PER_BOHR = 1.21
_EWALD_CVAR = 1.2  # r_c = L min(0.5, 1.2 N^(-1/6))

# Abramowitz & Stegun 7.1.26, written as the Fortran does: t = p / (p + x), p = 1/0.3275911
_AS_P = 3.0525860
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)

PARTS = ("full", "intra", "inter")


def erfc_as(x: torch.Tensor) -> torch.Tensor:
    """erfc(x) for x ≥ 0 by Abramowitz–Stegun 7.1.26 (absolute error < 1.5e-7)."""
    t = _AS_P / (_AS_P + x)
    a1, a2, a3, a4, a5 = _AS_A
    return torch.exp(-x * x) * t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))


class _ErfcFortran(torch.autograd.Function):
    """The polynomial erfc with the exact erfc's derivative, −2/√π exp(−x²) (the Fortran's
    forces). Twice differentiable through torch ops."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return erfc_as(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (-2.0 / math.sqrt(math.pi)) * torch.exp(-x * x)


class _ReciprocalSum(torch.autograd.Function):
    """Σ_k w_k |Σ_j q_j exp(i k·r_j)|² per structure, for k vectors (B, K, 3), sites r
    (B, N, 3), charges q (N,) and weights w (B, K).

    Work goes in blocks of k vectors, so that the (B, k, N) cos and sin arrays stay in
    cache and are never stored whole (fresh multi-megabyte arrays cost more in page faults
    than their arithmetic). The backward is written out and recomputes cos and sin block by
    block: with a_k = 2 w_k S_im,k and b_k = 2 w_k S_re,k,
        ∂E/∂r_j = q_j Σ_k (a_k cos θ_kj − b_k sin θ_kj) k,
        ∂E/∂k   = a_k Σ_j q_j cos θ_kj r_j − b_k Σ_j q_j sin θ_kj r_j,
    four matrix products per block. Everything is torch ops on the inputs, so a graph is
    built when one is asked for (create_graph): double backward works."""

    @staticmethod
    def _block(n_structures, n_sites):
        return max(8, 131072 // max(1, n_structures * n_sites))

    @staticmethod
    def _sums(kvec, sites, q):
        sites_t = sites.transpose(1, 2)
        size = _ReciprocalSum._block(*sites.shape[:2])
        s_re, s_im = [], []
        for start in range(0, kvec.shape[1], size):
            phase = torch.bmm(kvec[:, start : start + size], sites_t)
            s_re.append(torch.cos(phase) @ q)
            s_im.append(torch.sin(phase) @ q)
        return torch.cat(s_re, 1), torch.cat(s_im, 1)

    @staticmethod
    def forward(ctx, kvec, sites, q, weight):
        s_re, s_im = _ReciprocalSum._sums(kvec, sites, q)
        ctx.save_for_backward(kvec, sites, q, weight, s_re, s_im)
        return (weight * (s_re * s_re + s_im * s_im)).sum(-1)

    @staticmethod
    def backward(ctx, grad):
        kvec, sites, q, weight, s_re, s_im = ctx.saved_tensors
        if torch.is_grad_enabled():  # building a graph: recompute the sums differentiably
            s_re, s_im = _ReciprocalSum._sums(kvec, sites, q)
        g = 2.0 * grad[:, None] * weight  # (B, K)
        a = (g * s_im)[:, :, None]
        b = (g * s_re)[:, :, None]
        ak, bk = a * kvec, b * kvec
        qr = q[None, :, None] * sites
        sites_t = sites.transpose(1, 2)
        size = _ReciprocalSum._block(*sites.shape[:2])
        grad_sites = torch.zeros_like(sites)
        grad_kvec = []
        for start in range(0, kvec.shape[1], size):
            block = slice(start, start + size)
            phase = torch.bmm(kvec[:, block], sites_t)
            cos, sin = torch.cos(phase), torch.sin(phase)
            grad_sites = grad_sites + (
                torch.bmm(cos.transpose(1, 2), ak[:, block])
                - torch.bmm(sin.transpose(1, 2), bk[:, block])
            )
            grad_kvec.append(a[:, block] * torch.bmm(cos, qr) - b[:, block] * torch.bmm(sin, qr))
        grad_sites = grad_sites * q[None, :, None]
        grad_weight = grad[:, None] * (s_re * s_re + s_im * s_im)
        return torch.cat(grad_kvec, 1), grad_sites, None, grad_weight


def _heights(cell: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of each cell (B, 3, 3) rows -> (B, 3)."""
    volume = np.abs(np.linalg.det(cell))
    cross = np.stack(
        [
            np.cross(cell[:, 1], cell[:, 2]),
            np.cross(cell[:, 2], cell[:, 0]),
            np.cross(cell[:, 0], cell[:, 1]),
        ],
        axis=1,
    )
    return volume[:, None] / np.linalg.norm(cross, axis=-1)


@lru_cache(maxsize=8)
def _integer_grid(kmax: int) -> np.ndarray:
    """Integer vectors n with |n_i| ≤ kmax in the half space n > 0 (lexicographically), so
    that each ±k pair appears once."""
    r = np.arange(-kmax, kmax + 1)
    n = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    half = (n[:, 0] > 0) | ((n[:, 0] == 0) & ((n[:, 1] > 0) | ((n[:, 1] == 0) & (n[:, 2] > 0))))
    return n[half]


@lru_cache(maxsize=64)
def _kvector_integers(cell_key: bytes, alpha: float, kmax: int) -> np.ndarray:
    """The integer vectors n (half space) with |k| < 2πα, k = 2π n inv(cell)ᵀ, for one cell
    (given as the bytes of a float64 (3, 3) array so that it can be cached)."""
    cell = np.frombuffer(cell_key, dtype=np.float64).reshape(3, 3)
    n = _integer_grid(kmax)
    k = 2.0 * math.pi * n @ np.linalg.inv(cell).T
    k2 = (k * k).sum(-1)
    kcut = 2.0 * math.pi * alpha
    keep = (k2 < kcut * kcut) & (k2 != 0.0)
    return np.ascontiguousarray(n[keep])


class QTIP4PF(EnergyModel):
    """q-TIP4P/F water: `part` = "full" (all terms), "intra" (bonds and angles: the
    Fortran's qtip4pf-sr) or "inter" (Ewald + LJ, = full − intra).

    `ewald_cutoff` (Å): fixed real-space cutoff r_c (α = π/r_c); None for the Fortran's rule
    from each cell. `lj_cutoff` (Å): the O–O LJ truncation, 9 Å by default.
    `erfc_gradient`: "polynomial" (default; forces are −∂E/∂r of the energy returned) or
    "fortran" (the derivative of the exact erfc, as the Fortran's forces).
    """

    def __init__(
        self,
        part: str = "full",
        ewald_cutoff: float | None = None,
        lj_cutoff: float | None = None,
        erfc_gradient: str = "polynomial",
    ):
        super().__init__()
        if part not in PARTS:
            raise UserError(f"q-TIP4P/F part must be one of {', '.join(PARTS)}, not {part!r}")
        if erfc_gradient not in ("polynomial", "fortran"):
            raise UserError(
                f"erfc_gradient must be 'polynomial' or 'fortran', not {erfc_gradient!r}"
            )
        if ewald_cutoff is not None and not float(ewald_cutoff) > 0:
            raise UserError(f"ewald_cutoff must be a positive length in Å, not {ewald_cutoff!r}")
        self.part = part
        self.ewald_cutoff = None if ewald_cutoff is None else float(ewald_cutoff)
        self.erfc_gradient = erfc_gradient
        bohr = units.ANGSTROM_PER_BOHR
        ha = units.EV_PER_HARTREE
        self.lj_cutoff = _LJ_CUTOFF_BOHR * bohr if lj_cutoff is None else float(lj_cutoff)
        self.lj_sigma = _LJ_SIGMA_BOHR * bohr  # Å
        self.lj_epsilon = _LJ_EPSILON_HA * ha  # eV
        self.r_oh = _R_OH_BOHR * bohr  # Å
        self.morse_d = _D_HA * ha  # eV
        self.morse_a = _A_PER_BOHR / bohr  # 1/Å
        self.k_theta = _K_THETA_HA * ha  # eV/rad²
        self.theta_eq = _THETA_EQ
        self.coulomb = ha * bohr  # e²/(4πε0) in eV Å: 1 Ha bohr
        self.gamma = _GAMMA
        self.q_m = _Q_M
        self.q_h = _Q_H

    def extra_repr(self) -> str:
        return (
            f"part={self.part!r}, ewald_cutoff={self.ewald_cutoff}, lj_cutoff={self.lj_cutoff:.6f}"
        )

    # --- species ------------------------------------------------------------------------
    def check(self, numbers) -> None:
        numbers = np.asarray(torch.as_tensor(numbers).cpu(), dtype=np.int64).reshape(-1)
        if len(numbers) % 3 != 0:
            raise UserError(
                f"q-TIP4P/F needs water molecules as O,H,H triplets, but got {len(numbers)} atoms "
                "(not a multiple of 3)"
            )
        pattern = np.tile([8, 1, 1], len(numbers) // 3)
        bad = np.flatnonzero(numbers != pattern)
        if len(bad):
            from ase.data import chemical_symbols

            i = int(bad[0])
            got = (
                chemical_symbols[int(numbers[i])]
                if 0 < numbers[i] < len(chemical_symbols)
                else str(numbers[i])
            )
            want = "O" if i % 3 == 0 else "H"
            raise UserError(
                f"q-TIP4P/F needs atoms ordered O,H,H, O,H,H, ...: atom {i} (from 0) is {got}, expected {want}"
            )

    def default_numbers(self, n_atoms: int):
        if n_atoms % 3 != 0:
            raise UserError(
                f"q-TIP4P/F needs O,H,H triplets, but i-PI sent {n_atoms} atoms (not a multiple of 3)"
            )
        return np.tile(np.array([8, 1, 1], dtype=np.int64), n_atoms // 3)

    # --- energy -------------------------------------------------------------------------
    def energy(self, state: State) -> torch.Tensor:
        n_structures = state.n_structures
        n_atoms = state.n_atoms_per_structure
        if n_atoms % 3 != 0:
            raise UserError(f"q-TIP4P/F needs O,H,H triplets, but a structure has {n_atoms} atoms")
        expected = torch.arange(n_structures, device=state.batch.device).repeat_interleave(n_atoms)
        if not torch.equal(state.batch, expected):
            raise ValueError(
                "q-TIP4P/F needs the atoms of each structure contiguous, in batch order"
            )
        pattern = torch.tensor([8, 1, 1], dtype=state.numbers.dtype, device=state.numbers.device)
        if not bool((state.numbers.reshape(-1, 3) == pattern).all()):
            self.check(state.numbers)
        n_mol = n_atoms // 3
        pos = state.positions.reshape(n_structures, n_mol, 3, 3)
        r_o = pos[:, :, 0]
        d1 = pos[:, :, 1] - r_o  # (B, m, 3) O->H1
        d2 = pos[:, :, 2] - r_o
        if bool(state.pbc.all()):
            d1 = self._minimum_image(d1, state.cell)
            d2 = self._minimum_image(d2, state.cell)
        energy = torch.zeros(n_structures, dtype=pos.dtype, device=pos.device)
        if self.part in ("full", "intra"):
            energy = energy + self._intra(d1, d2)
        if self.part in ("full", "inter"):
            if not bool(state.pbc.all()):
                raise UserError(
                    "q-TIP4P/F here needs a periodic cell in all three directions (Ewald sum)"
                )
            energy = (
                energy + self._electrostatics(state, pos, d1, d2) + self._lennard_jones(state, r_o)
            )
        return energy

    @staticmethod
    def _minimum_image(d, cell):
        """O→H vectors (B, m, 3) brought to their shortest image (exact for vectors shorter
        than half the smallest cell height, as any bond is)."""
        frac = torch.linalg.solve(cell.transpose(-1, -2), d.transpose(-1, -2)).transpose(-1, -2)
        return d - torch.bmm(torch.round(frac.detach()), cell)

    def _intra(self, d1, d2):
        r1 = torch.linalg.norm(d1, dim=-1)
        r2 = torch.linalg.norm(d2, dim=-1)
        a = self.morse_a

        def stretch(r):
            x = a * (r - self.r_oh)
            x2 = x * x
            return self.morse_d * x2 * (1.0 - x + (7.0 / 12.0) * x2)

        cos_theta = (d1 * d2).sum(-1) / (r1 * r2)
        theta = torch.acos(cos_theta)
        e = stretch(r1) + stretch(r2) + self.k_theta * (theta - self.theta_eq) ** 2
        return e.sum(-1)

    def _ewald_parameters(self, cell: torch.Tensor, n_atoms: int):
        """Per structure: r_c, α, and the (padded) k integer vectors with their mask."""
        cell_np = np.ascontiguousarray(cell.detach().cpu().numpy(), dtype=np.float64)
        lengths = np.linalg.norm(cell_np, axis=-1)
        if self.ewald_cutoff is None:
            l_short = _heights(cell_np).min(axis=-1)
            r_c = l_short * min(0.5, _EWALD_CVAR * n_atoms ** (-1.0 / 6.0))
        else:
            r_c = np.full(len(cell_np), self.ewald_cutoff)
        alpha = math.pi / r_c
        kmax = (alpha * lengths.max(axis=-1)).astype(np.int64)
        ints = [
            _kvector_integers(c.tobytes(), float(a), int(k))
            for c, a, k in zip(cell_np, alpha, kmax, strict=True)
        ]
        n_k = max(len(n) for n in ints)
        padded = np.zeros((len(ints), max(n_k, 1), 3), dtype=np.float64)
        mask = np.zeros((len(ints), max(n_k, 1)), dtype=bool)
        for b, n in enumerate(ints):
            padded[b, : len(n)] = n
            mask[b, : len(n)] = True
        return r_c, alpha, padded, mask

    def _electrostatics(self, state, pos, d1, d2):
        n_structures, n_mol = pos.shape[:2]
        dtype, device = pos.dtype, pos.device
        cell = state.cell
        r_o = pos[:, :, 0]
        dm = (0.5 * (1.0 - self.gamma)) * (d1 + d2)  # O -> M
        # charge sites: M in place of O, then H1, H2 (raw positions; any image will do)
        sites = torch.stack([r_o + dm, pos[:, :, 1], pos[:, :, 2]], dim=2)  # (B, m, 3, 3)
        n_sites = 3 * n_mol
        q = torch.tensor([self.q_m, self.q_h, self.q_h], dtype=dtype, device=device).repeat(n_mol)
        r_c_np, alpha_np, n_int_np, mask_np = self._ewald_parameters(cell, n_sites)
        r_c = torch.as_tensor(r_c_np, dtype=dtype, device=device)
        alpha = torch.as_tensor(alpha_np, dtype=dtype, device=device)

        # real space: every pair and image closer than r_c
        flat = sites.reshape(-1, 3)
        i, j, vec = neighbor_pairs(flat, cell, state.pbc, state.batch, float(r_c_np.max()))
        pair_b = state.batch.index_select(0, i)
        r = torch.linalg.norm(vec, dim=-1)
        if np.all(r_c_np == r_c_np[0]):  # one cutoff for all: vesin's list is the list
            x = float(alpha_np[0]) * r
        else:
            keep = r < r_c.index_select(0, pair_b)
            i, j, r, pair_b = i[keep], j[keep], r[keep], pair_b[keep]
            x = alpha.index_select(0, pair_b) * r
        erfc = _ErfcFortran.apply(x) if self.erfc_gradient == "fortran" else erfc_as(x)
        q_flat = q.repeat(n_structures)
        qq = q_flat.index_select(0, i) * q_flat.index_select(0, j)
        e_real = torch.zeros(n_structures, dtype=dtype, device=device).index_add(
            0, pair_b, qq * erfc / r
        )

        # bare Coulomb of the intramolecular charge pairs, which Ewald must not count
        r_mh1 = torch.linalg.norm(d1 - dm, dim=-1)
        r_mh2 = torch.linalg.norm(d2 - dm, dim=-1)
        r_hh = torch.linalg.norm(d2 - d1, dim=-1)
        e_excl = -(
            self.q_m * self.q_h * (1.0 / r_mh1 + 1.0 / r_mh2) + self.q_h * self.q_h / r_hh
        ).sum(-1)

        # reciprocal space, half of the k vectors (weight 2)
        n_int = torch.as_tensor(n_int_np, dtype=dtype, device=device)  # (B, K, 3)
        mask = torch.as_tensor(mask_np, device=device)
        kvec = (2.0 * math.pi) * torch.einsum("bkj,bij->bki", n_int, torch.linalg.inv(cell))
        k2 = (kvec * kvec).sum(-1)
        k2 = torch.where(mask, k2, torch.ones_like(k2))
        weight = torch.exp(-k2 / (4.0 * alpha[:, None] ** 2)) / k2 * mask.to(dtype)
        volume = torch.abs(torch.linalg.det(cell))
        e_recip = (4.0 * math.pi / volume) * _ReciprocalSum.apply(
            kvec, sites.reshape(n_structures, n_sites, 3), q, weight
        )

        e_self = -(alpha / math.sqrt(math.pi)) * (q * q).sum()
        return self.coulomb * (e_real + e_excl + e_recip + e_self)

    def _lennard_jones(self, state, r_o):
        n_structures, n_mol = r_o.shape[:2]
        batch_o = torch.arange(n_structures, device=r_o.device).repeat_interleave(n_mol)
        i, _, vec = neighbor_pairs(
            r_o.reshape(-1, 3), state.cell, state.pbc, batch_o, self.lj_cutoff
        )
        r2 = (vec * vec).sum(-1)
        keep = r2 < self.lj_cutoff**2
        sr6 = (self.lj_sigma**2 / r2[keep]) ** 3
        e_pair = 4.0 * self.lj_epsilon * sr6 * (sr6 - 1.0)
        return torch.zeros(n_structures, dtype=r_o.dtype, device=r_o.device).index_add(
            0, batch_o[i[keep]], e_pair
        )
