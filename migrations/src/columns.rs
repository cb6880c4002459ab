//! Column helpers shared by the migrations.

use sea_orm_migration::prelude::*;

/// Add `column` to `table`, unless the table has a column of that name already (so applying a
/// migration again is a no-op).
pub(crate) async fn add_column<T: IntoIden + Copy + 'static>(
    m: &SchemaManager<'_>,
    table: T,
    mut column: ColumnDef,
) -> Result<(), DbErr> {
    let table_name = table.into_iden().to_string();
    if m.has_column(&table_name, &column.get_column_name()).await? {
        return Ok(());
    }
    m.alter_table(
        Table::alter()
            .table(table)
            .add_column(&mut column)
            .to_owned(),
    )
    .await
}

/// Drop `column` of `table`.
pub(crate) async fn drop_column<T: IntoIden + 'static, C: IntoIden + 'static>(
    m: &SchemaManager<'_>,
    table: T,
    column: C,
) -> Result<(), DbErr> {
    m.alter_table(Table::alter().table(table).drop_column(column).to_owned())
        .await
}
