"""The runtime, in layers that import only downwards (checked by import-linter, see pyproject):

    host        the host loop: steps guests, shells, the NIC and the hypervisor
    hypervisor  policy, control channel, plugin repository, emulated vNIC, data-path modes
    shell       the guest's side of the data path: frame pool, shell rings, the shell
    sandbox     wasm: loader and limits, engine, fast calls, Shell API imports, linear memory
    guest       the guest's workload (traffic generator and sink); knows only frames
    conformance the ABI conformance suite, on the sandbox, the shell and the NIC model
"""
