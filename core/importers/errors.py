"""The importer's errors: a refusal lists every source module or call it cannot reproduce."""

from __future__ import annotations

from rosetta.errors import RosettaError


class ImportRefused(RosettaError):
    """The source cannot be reproduced exactly by the spec. ``lines`` holds one line per
    unsupported module, call, optimizer or loss setting, each naming the source and what is
    missing (``layer3.1.se (SqueezeExcite): unsupported module: ...``). Nothing is written."""

    def __init__(self, lines):
        self.lines = list(dict.fromkeys(lines))  # once each, in order
        super().__init__(f"cannot import exactly ({len(self.lines)} problem"
                         f"{'s' if len(self.lines) != 1 else ''}):\n" + "\n".join(self.lines))
