"""Reports over distillation runs and studies: what was measured (`collect`), as tables
(`tables`) and plots (`plots`), model cards for the students (`card`), and the layer-wise
analysis of a student against its teacher (`analysis`)."""
