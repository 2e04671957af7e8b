"""bertjax.parallel.hlo: the collectives of compiled HLO text."""

from bertjax.parallel.hlo import hlo_collectives

COLLECTIVES_HLO = """ENTRY %main.1 (a: f32[16,32,128]) -> f32[64,32] {
  %all-gather-start.3 = (f32[4,32,128]{2,1,0}, f32[16,32,128]{2,1,0}) all-gather-start(%a), channel_id=3, replica_groups=[1,4]<=[4], dimensions={0}, metadata={op_name="jit(train_step)/bert/layer_0/attention/query/dot_general" stack_frame_id=9}
  %all-reduce.7 = bf16[64,32]{1,0} all-reduce(%b), channel_id=7, replica_groups=[2,4]<=[8], to_apply=%add, metadata={op_name="jit(train_step)/transpose(jvp(BertForPreTraining))/bert/add_any"}
  %reduce-scatter.1 = s32[8]{0} reduce-scatter(%c), dimensions={0}, to_apply=%add
  %all-gather-done.3 = f32[16,32,128]{2,1,0} all-gather-done(%all-gather-start.3)
  %gathered_copy = f32[16,32,128]{2,1,0} copy(%all-gather-done.3)
}
"""


def test_hlo_collectives_reads_kind_bytes_and_source():
    """The collectives of compiled HLO, as benchmarks/sharded_collectives.py and the sharding test
    count them: an async collective once (at its start, result tuple included), with its source."""
    found = hlo_collectives(COLLECTIVES_HLO)
    assert [c.kind for c in found] == ["all-gather", "all-reduce", "reduce-scatter"]
    assert [c.bytes for c in found] == [(4 + 16) * 32 * 128 * 4, 64 * 32 * 2, 8 * 4]
    assert found[0].source == "jit(train_step)/bert/layer_0/attention/query/dot_general"
    assert found[1].source.endswith("bert/add_any") and found[2].source == ""
    assert "f32[16,32," in found[0].result
