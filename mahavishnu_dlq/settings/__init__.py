"""DLQSettings: the only place environment variables and YAML files are read.

Values come from, highest precedence first: keyword arguments, environment
variables ``MAHAVISHNU_DLQ_*`` (nested groups with ``__``, e.g.
``MAHAVISHNU_DLQ_PROCESSOR__CONCURRENCY=4``), a YAML file
(:meth:`DLQSettings.from_yaml`, or the file named by ``MAHAVISHNU_DLQ_CONFIG``),
then the defaults. :meth:`DLQSettings.load` is the entry point for hosts and the
CLI: every problem becomes one line of a
:class:`~mahavishnu_dlq.errors.ConfigurationError` naming the field, the bad
value, what is allowed and where the value came from. The core never reads
settings itself: :meth:`DLQSettings.policy_book` and
:meth:`DLQSettings.error_classifier` build the objects it takes.

Hostile input is refused with a ConfigurationError, never a traceback: a YAML
file that is too big, too deep, expands too far through aliases or repeats a
key; an environment variable too long or nested too deep; credentials in a host
URL are moved to ``opensearch.username``/``password`` so that nothing shows them.

The package, one module per concept:

- :mod:`.model`: :class:`DLQSettings`, one build, the bridges to the core;
- :mod:`.groups`: the nested groups (``processor``, ``jobs``, ``policies`` …);
- :mod:`.web`: the ``web`` group (console tokens and roles, redaction);
- :mod:`.opensearch`: the ``opensearch`` group (nodes, TLS, index shape);
- :mod:`.hosts`: OpenSearch host entries and the credentials they carry;
- :mod:`.sources`: environment, YAML file, keyword arguments, and their bounds;
- :mod:`.yamlfile`: the hardened YAML loader of settings files;
- :mod:`.problems`: validation errors as one readable ConfigurationError.
"""

from __future__ import annotations

from .groups import (
    ClassifierRuleSettings,
    ClassifierSettings,
    FailoverSettings,
    JobSettings,
    PolicyOverrideSettings,
    PolicySettings,
    ProcessorSettings,
    SQLiteSettings,
    WorkflowPolicySettings,
    state_dir,
)
from .model import DLQSettings
from .opensearch import OpenSearchSettings
from .retention import RetentionSettings
from .sources import CONFIG_ENV_VAR, ENV_PREFIX
from .web import WebSettings, WebToken

__all__ = [
    "CONFIG_ENV_VAR",
    "ENV_PREFIX",
    "ClassifierRuleSettings",
    "ClassifierSettings",
    "DLQSettings",
    "FailoverSettings",
    "JobSettings",
    "OpenSearchSettings",
    "PolicyOverrideSettings",
    "PolicySettings",
    "ProcessorSettings",
    "RetentionSettings",
    "SQLiteSettings",
    "WebSettings",
    "WebToken",
    "WorkflowPolicySettings",
    "state_dir",
]
