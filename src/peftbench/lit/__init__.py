from peftbench.lit.module import PeftLitModule

__all__ = ["PeftLitModule"]
