"""Translation in the module's own context ("TokenUNetSegment"), whatever file the string is in.

``slicer.i18n.tr`` takes its context from the calling file (``widget.panel``, ``mrml.controller``...), which
would scatter the module's strings over contexts no translator looks at; this helper pins the context.
"""

CONTEXT = "TokenUNetSegment"


def tr(text: str) -> str:
    try:
        from slicer.i18n import translate
    except ImportError:  # outside the application
        return text
    return translate(CONTEXT, text)
