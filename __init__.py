"""npa: sandboxed WebAssembly plugins for virtual NICs (VMware's Network Plugin Architecture).

One import package. The repository's top-level folders are its parts, mapped into it when it is
built or installed (pyproject.toml, `[tool.setuptools]`):

    npa.shell_api   the ABI: one source of truth for headers, reference and loader
    npa.nic_model   the hardware: SR-IOV NIC, IOMMU, vendor ring engines, embedded switch, uplinks
    npa.runtime     sandbox, shell, hypervisor, host loop, guest workload, conformance suite
    npa.cli         the `npa` command (`python -m npa` runs it too)

Importing `npa` imports none of them: each command loads what it uses when it runs.
"""
