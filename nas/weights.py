class LoadReport: pass
def load_reference_weights(*a): pass
