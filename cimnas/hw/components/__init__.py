"""One module per physical component: its constants (with sources), energy per action, area.

cell (memory cells), drivers (row drivers with the temporal DAC, column drivers), adc (NeuroSim
flash ADC and the survey ADC law), sram (GLB and tile buffers, CACTI tables), router (ISAAC
router), technology (node interpolation helpers)."""
