"""i-PI PES plugin file for ipi-mts models (the class lives in `ipi_mts.server.pes`).

With i-PI's Python driver:

    i-pi-py_driver -m custom -P drivers/ipi_mts_pes.py -o model=qtip4pf -u -a ADDRESS

(`-o` takes comma-separated `key=value` pairs; a bare first value is the model name), or
inside plain i-PI without a socket:

    <ffdirect name='water'>
      <pes>custom</pes><pes_path>drivers/ipi_mts_pes.py</pes_path>
      <parameters>{model: qtip4pf}</parameters>
    </ffdirect>

Under `ipi-mts run` the same PES is registered as `<pes>ipi_mts</pes>` and needs neither this
file nor a species template. Parameters: see `ipi_mts.server.pes`.
"""

from ipi_mts.server.pes import IpiMtsDriver

__DRIVER_NAME__ = "ipi_mts"
__DRIVER_CLASS__ = "IpiMtsDriver"
__all__ = ["IpiMtsDriver"]
