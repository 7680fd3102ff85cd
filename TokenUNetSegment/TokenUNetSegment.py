"""TokenUNetSegment: efficient, interpretable transformer segmentation for 3D Slicer.

Only the standard library and Slicer-bundled modules are imported at file scope: torch, MONAI and
the helper package are imported on first use, after their installation has been offered.
"""

import logging

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

try:
    from slicer.i18n import tr as _
except ImportError:  # Slicer < 5.4 has no translation helper

    def _(text):
        return text


class TokenUNetSegment(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and Help & Acknowledgement panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("TokenUNet Segment")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["TokenUNet developers"]
        self.parent.helpText = _(
            "Segment CT or brain MRI volumes with Token-UNet or MetaUNETR networks, on the GPU or the CPU, "
            "and see where each learned token looked as a heatmap. "
            "See the <a href='https://github.com/tokenunet/SlicerTokenUNet'>project page</a> for details."
        )
        self.parent.acknowledgementText = _(
            "Token-UNet: Tshimanga, Zanola, Del Pup, Atzori, arXiv 2602.20008 (2026). "
            "MetaUNETR: Lyu, Zhang, Zhang, Liu, Wang, Zhu, MICCAI 2024. "
            "Built on PyTorch, MONAI and SimpleITK."
        )


class TokenUNetSegmentWidget(ScriptedLoadableModuleWidget):
    """Minimal GUI: lists the available networks (the segmentation GUI arrives with issue #6)."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        import qt

        label = qt.QLabel(
            _("Networks available: {names}").format(names=", ".join(TokenUNetSegmentLogic().networkNames()))
        )
        label.wordWrap = True
        self.layout.addWidget(label)
        self.layout.addStretch(1)


class TokenUNetSegmentLogic(ScriptedLoadableModuleLogic):
    """Thin logic over the helper package, usable from Slicer's Python console."""

    def networkNames(self):
        """Names accepted by ``buildNetwork`` (imports torch on first call)."""
        from TokenUNetSegmentLib.model import network_names

        return network_names()

    def buildNetwork(self, name, inChannels, outChannels, **overrides):
        """A freshly initialised network by name (see ``TokenUNetSegmentLib.model.build_network``)."""
        from TokenUNetSegmentLib.model import build_network

        return build_network(name, inChannels, outChannels, **overrides)


class TokenUNetSegmentTest(ScriptedLoadableModuleTest):
    """In-Slicer tests (run from the Reload & Test button or Slicer's test driver)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_build_network()

    def test_build_network(self):
        self.delayDisplay("Building a Token-UNet")
        try:
            import torch
        except ImportError:
            logging.warning("PyTorch is not installed (install the PyTorch extension); skipping the network test.")
            return
        net = TokenUNetSegmentLogic().buildNetwork("8Token", 1, 2).eval()
        with torch.no_grad():
            logits = net(torch.zeros(1, 1, 16, 16, 16))
        self.assertEqual(tuple(logits.shape), (1, 2, 16, 16, 16))
        self.delayDisplay("Test passed")
