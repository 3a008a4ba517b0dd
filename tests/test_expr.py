"""The user-facing expressions of ``heliosdb.expr`` over the engine's IR (``kernels.ir``)."""
from __future__ import annotations

import pyarrow as pa
import pytest

from heliosdb import expr
from heliosdb.errors import SchemaError
from heliosdb.expr import col, func, if_else, lit
from heliosdb.kernels import ir


def test_operators_build_user_nodes_that_are_ir_nodes():
    e = (col("x") + 1) * 2 > lit(3.5)
    assert isinstance(e, expr.BinOp) and isinstance(e, ir.BinOp)
    assert isinstance(e.left.left, expr.BinOp) and isinstance(e.left.left.right, expr.Lit)
    for node in (col("x").is_null(), col("x").cast("int32"), col("x").alias("y"), ~col("b"),
                 if_else(col("b"), 1, 2), func("sqrt", col("x")), -col("x")):
        assert isinstance(node, expr.Expr), node
    assert repr(e) == '(((col("x") + 1) * 2) > 3.5)'
    assert e.dtype(pa.schema([("x", pa.int32())])) == pa.bool_()


def test_ir_nodes_are_plain_values_without_operators():
    a, b = ir.Col("x"), ir.Col("x")
    assert a != b and a == a                     # identity, not a BinOp
    assert {a: 1}[a] == 1
    with pytest.raises(TypeError):
        a + 1


def test_ir_nodes_mix_into_user_expressions_as_they_are():
    node = ir.BinOp("*", ir.Col("y"), ir.Lit(2))
    e = col("x") + node
    assert e.right is node and lit(node) is node


def test_an_expression_has_no_truth_value():
    with pytest.raises(TypeError, match="combine predicates with & | ~"):
        bool(col("x") > 1)


def test_unknown_cast_type_names_the_choices():
    with pytest.raises(SchemaError, match="unknown type 'int128'; use one of"):
        col("x").cast("int128")


def test_the_names_heliosdb_expr_had_are_still_there():
    for name in ("Expr", "Col", "Lit", "BinOp", "Not", "IsNull", "Cast", "Alias", "IfElse", "Func",
                 "FUNCTIONS", "INTEGER_FUNCTIONS", "ARITH_OPS", "CMP_OPS", "BOOL_OPS", "is_numeric",
                 "is_stringlike", "strip_alias", "as_expr", "parse_projection", "if_else", "func",
                 "col", "lit", "AggSpec", "count", "sum", "min", "max", "mean"):
        assert hasattr(expr, name), name
    assert expr.FUNCTIONS is ir.FUNCTIONS


def test_aggregate_specs_type_columns_with_the_user_nodes():
    schema = pa.schema([("v", pa.int64())])
    assert expr.sum("v").output_type(schema, "agg") == pa.int64()
    with pytest.raises(SchemaError, match="unknown column 'w'"):
        expr.mean("w").output_type(schema, "agg")
