"""The labelled cache node: `docker node update --label-add <label>=true <node>`."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.node_label import NodeLabel


@dataclass
class LabelledNodeArgs:
    node: str
    """Hostname or ID of the Swarm node that runs the cache."""
    label: str
    """Label key, set to "true" (dtr.cache; msr.cache for MSR 3)."""
    service: str
    """Name of the cache's service: its own constraint does not keep the label
    in place when the label is deleted (other services' constraints do)."""


class LabelledNode(pulumi.ComponentResource):
    """A Swarm node carrying the cache's placement label."""

    node: pulumi.Output[str]
    node_id: pulumi.Output[str]
    label: pulumi.Output[str]
    constraint: pulumi.Output[str]
    """The placement constraint that selects this node."""

    def __init__(self, name: str, args: LabelledNodeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("msrcache:index:LabelledNode", name, None, opts)
        label = NodeLabel(
            f"{name}-label",
            node=args.node,
            label=args.label,
            service=args.service,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.label_resource = label
        self.node = pulumi.Output.from_input(args.node)
        self.node_id = label.node_id
        self.label = pulumi.Output.from_input(args.label)
        self.constraint = pulumi.Output.from_input(placement_constraint(args.label))
        self.register_outputs(
            {"node": self.node, "nodeId": self.node_id, "label": self.label, "constraint": self.constraint}
        )


def placement_constraint(label: str) -> str:
    return f"node.labels.{label} == true"
