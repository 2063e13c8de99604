"""The labelled cache node: `docker node update --label-add <label>=true <node>`."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.node_label import NodeLabel


@dataclass
class LabelledNodeArgs:
    nodes: list[str]
    """Hostnames or IDs of the Swarm nodes that run the cache's tasks."""
    label: str
    """Label key, set to "true" (dtr.cache; msr.cache for MSR 3)."""
    service: str
    """Name of the cache's service: its own constraint does not keep the label
    in place when the label is deleted (other services' constraints do)."""


class LabelledNode(pulumi.ComponentResource):
    """The Swarm nodes carrying the cache's placement label (one, or several
    for a cache with several tasks)."""

    node: pulumi.Output[str]
    """The first node (the only one, unless `nodes` lists several)."""
    nodes: pulumi.Output[list[str]]
    node_id: pulumi.Output[str]
    label: pulumi.Output[str]
    constraint: pulumi.Output[str]
    """The placement constraint that selects these nodes."""

    def __init__(self, name: str, args: LabelledNodeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("msrcache:index:LabelledNode", name, None, opts)
        # One label resource per node. The first keeps the name it has always
        # had, so deployed stacks see no change; the others are named by node,
        # so adding or removing one touches only that node's label.
        self.labels = [
            NodeLabel(
                label_resource_name(name, i, node),
                node=node,
                label=args.label,
                service=args.service,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for i, node in enumerate(args.nodes)
        ]
        self.label_resource = self.labels[0]
        self.node = pulumi.Output.from_input(args.nodes[0])
        self.nodes = pulumi.Output.from_input(list(args.nodes))
        self.node_id = self.labels[0].node_id
        self.label = pulumi.Output.from_input(args.label)
        self.constraint = pulumi.Output.from_input(placement_constraint(args.label))
        self.register_outputs(
            {
                "node": self.node,
                "nodes": self.nodes,
                "nodeId": self.node_id,
                "label": self.label,
                "constraint": self.constraint,
            }
        )


def label_resource_name(name: str, index: int, node: str) -> str:
    """The first node's label is `<name>-label`; the others `<name>-label-<node>`."""
    return f"{name}-label" if index == 0 else f"{name}-label-{node}"


def placement_constraint(label: str) -> str:
    return f"node.labels.{label} == true"
