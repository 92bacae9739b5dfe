"""vCenter integration: the only package that imports pyVmomi."""

from zvm.vcenter.connection import VCenter, VCenterConfig

__all__ = ["VCenter", "VCenterConfig"]
