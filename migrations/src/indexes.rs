//! Index helpers shared by the migrations.

use sea_orm_migration::prelude::*;

/// Create index `name` on `cols` of `table`, if it does not exist yet.
pub(crate) async fn index<T: IntoIden + Copy + 'static, C: IntoIden + Copy + 'static>(
    m: &SchemaManager<'_>,
    name: &str,
    table: T,
    cols: &[C],
) -> Result<(), DbErr> {
    let mut stmt = Index::create();
    stmt.name(name).table(table).if_not_exists();
    for col in cols {
        stmt.col(*col);
    }
    m.create_index(stmt.to_owned()).await
}

/// As [`index`], unique.
pub(crate) async fn unique_index<T: IntoIden + Copy + 'static, C: IntoIden + Copy + 'static>(
    m: &SchemaManager<'_>,
    name: &str,
    table: T,
    cols: &[C],
) -> Result<(), DbErr> {
    let mut stmt = Index::create();
    stmt.name(name).table(table).unique().if_not_exists();
    for col in cols {
        stmt.col(*col);
    }
    m.create_index(stmt.to_owned()).await
}

/// Drop index `name` of `table`, if it exists.
pub(crate) async fn drop_index<T: IntoIden + 'static>(
    m: &SchemaManager<'_>,
    name: &str,
    table: T,
) -> Result<(), DbErr> {
    m.drop_index(Index::drop().name(name).table(table).if_exists().to_owned())
        .await
}
